"""Requests a human waits on go before the background steps of runs, in one process.

A server that also advances runs shares one event loop between both. A burst of decisions wakes
as many runs, and their steps queue in front of the next requests: each click then waits behind
the work the clicks before it made (P4 in docs/benchmarks.md: 55 decisions a second, p50 250 ms,
where recording alone takes about a millisecond). `Foreground` counts the requests in progress;
`ForegroundRequests` (an ASGI middleware that `create_app` installs) marks each one from its
start to the start of its response, so an event stream counts only until it starts streaming.
A run's step waits for its turn with `turn()`: at once while no request is in progress;
otherwise when the last one is answered, or, so that a steady stream of requests never stops
the runs, when its turn comes among the steps let through one per `interval` meanwhile.

Without a server (the library embedded, a `qapten worker`) nothing is ever in progress and
`turn()` returns at once.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_INTERVAL = 0.05
"""Seconds between two steps let through while requests keep coming: with steps of a few
milliseconds, runs keep at least a tenth of the process while requests take the rest."""


class Foreground:
    """The requests in progress in this process, and the steps waiting for them."""

    def __init__(self, *, interval: float = DEFAULT_INTERVAL) -> None:
        self.interval = interval
        self._requests = 0
        self._last_answered = -math.inf
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._ticking: asyncio.TimerHandle | None = None

    @property
    def requests(self) -> int:
        """How many requests are in progress."""
        return self._requests

    @property
    def waiting(self) -> int:
        """How many steps wait for their turn."""
        return sum(1 for step in self._waiting if not step.done())

    def begin(self) -> None:
        """A request started."""
        self._requests += 1

    def end(self) -> None:
        """A request was answered (or failed)."""
        self._requests -= 1
        self._last_answered = time.monotonic()

    def quiet(self) -> bool:
        """No request in progress, and none answered in the last `interval`: the next request
        of a client that is sending one after another is not on its way."""
        return self._requests == 0 and time.monotonic() - self._last_answered >= self.interval

    async def turn(self) -> None:
        """Return when a background step may run (see the module's docstring)."""
        if self.quiet():
            return
        loop = asyncio.get_running_loop()
        step: asyncio.Future[None] = loop.create_future()
        self._waiting.append(step)
        if self._ticking is None:
            self._ticking = loop.call_later(self.interval, self._tick, loop)
        await step  # a cancelled step is skipped when its turn comes: it is done already

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        """Every `interval` while steps wait: all of them go once it is quiet, else one."""
        self._ticking = None
        if self.quiet():
            while self._waiting:
                _release(self._waiting.popleft())
            return
        while self._waiting:
            if _release(self._waiting.popleft()):
                break
        if self._waiting:
            self._ticking = loop.call_later(self.interval, self._tick, loop)


def _release(step: asyncio.Future[None]) -> bool:
    """Let a waiting step go; False if it was cancelled meanwhile."""
    if step.done():
        return False
    step.set_result(None)
    return True


class ForegroundRequests:
    """ASGI middleware: each HTTP request is in `foreground` from its start to the start of its
    response (or its end, if it fails before answering)."""

    def __init__(self, app: ASGIApp, foreground: Foreground) -> None:
        self.app = app
        self.foreground = foreground

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        foreground = self.foreground
        foreground.begin()
        answering = True

        async def send_and_mark(message: Message) -> None:
            nonlocal answering
            if answering and message["type"] == "http.response.start":
                answering = False
                foreground.end()
            await send(message)

        try:
            await self.app(scope, receive, send_and_mark)
        finally:
            if answering:
                foreground.end()
