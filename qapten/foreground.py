"""Requests a human waits on go before the background steps of runs, in one process.

A server that also advances runs shares one event loop between both. A burst of decisions wakes
as many runs, and their steps queue in front of the next requests: each click then waits behind
the work the clicks before it made (P4 in docs/benchmarks.md: 55 decisions a second, p50 250 ms,
where recording alone takes about a millisecond). `Foreground` counts the requests in progress;
`ForegroundRequests` (an ASGI middleware that `create_app` installs) marks each one from its
start to the start of its response, so an event stream counts only until it starts streaming.
A run's step waits for its turn with `turn()`: at once unless requests crowded in (`CROWD` of
them within an `interval`) during the last `interval`; otherwise in order, one step per
`interval` while they keep coming (so that they slow the runs but never stop them), then in
bursts once it is quiet.

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
BURST = 16
"""Steps let through at each tick once it is quiet (five ticks an interval)."""
CROWD = 5
"""Requests begun within one interval that make steps wait (100 a second, at 50 ms): a load
that keeps the loop busy, not a client polling."""


class Foreground:
    """The requests in progress in this process, and the steps waiting for them."""

    def __init__(self, *, interval: float = DEFAULT_INTERVAL) -> None:
        self.interval = interval
        self._requests = 0
        self._last_crowded = -math.inf
        self._window_start = -math.inf
        self._window_requests = 0
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
        now = time.monotonic()
        if now - self._window_start >= self.interval:
            self._window_start, self._window_requests = now, 0
        self._window_requests += 1
        if self._window_requests >= CROWD:
            self._last_crowded = now

    def end(self) -> None:
        """A request was answered (or failed)."""
        if self._requests >= CROWD:  # a crowd in progress lasted until now
            self._last_crowded = time.monotonic()
        self._requests -= 1

    def quiet(self) -> bool:
        """Requests have not crowded in (`CROWD` of them begun within one `interval`, or in
        progress at once) during the last `interval`. One client asking now and then, or a
        page polling a few times a second, is no crowd: steps never wait for it, or they
        would crawl while it polls."""
        crowded = self._requests >= CROWD  # in progress at once (requests that await)
        return not crowded and time.monotonic() - self._last_crowded >= self.interval

    async def turn(self) -> None:
        """Return when a background step may run (see the module's docstring)."""
        if self.quiet() and not self._waiting:
            return
        loop = asyncio.get_running_loop()
        step: asyncio.Future[None] = loop.create_future()
        self._waiting.append(step)
        if self._ticking is None:
            self._tick_in(loop, self.interval)
        await step  # a cancelled step is skipped when its turn comes: it is done already

    def _tick_in(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        self._ticking = loop.call_later(delay, self._tick, loop, loop.time() + delay)

    def _tick(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        """While steps wait: once it is quiet, a burst of them every fifth of an interval;
        else one every interval. A tick that comes late tells of a loop too busy to have read
        the requests that may be waiting on its sockets (a long step, a garbage collection):
        it is not taken for quiet. Steps go in bursts, never all at once, for the same reason:
        a thousand steps let go together would keep the loop from seeing the next requests,
        and it would look quiet again."""
        self._ticking = None
        late = loop.time() - due > self.interval / 2
        quiet = self.quiet() and not late
        let_through = BURST if quiet else 1
        while self._waiting and let_through:
            if _release(self._waiting.popleft()):
                let_through -= 1
        if self._waiting:
            self._tick_in(loop, self.interval / 5 if quiet else self.interval)


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
