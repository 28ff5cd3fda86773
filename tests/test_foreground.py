"""Requests in progress go before the steps of runs (qapten.foreground): the pacing itself, the
middleware that marks requests, and a swarm whose woken run waits for them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from qapten.foreground import BURST, CROWD, Foreground, ForegroundRequests
from qapten.testing import ScriptedChatModel, delegate, deliver

from .conftest import SwarmFactory

INTERVAL = 0.2
"""Long next to what a loop iteration takes, so that "not yet" below is not a race."""


def crowd(foreground: Foreground) -> None:
    """Requests coming in faster than a client polling would send them."""
    for _ in range(CROWD):
        foreground.begin()


def disperse(foreground: Foreground) -> None:
    for _ in range(CROWD):
        foreground.end()


async def test_without_requests_a_step_goes_at_once() -> None:
    foreground = Foreground(interval=INTERVAL)
    await asyncio.wait_for(foreground.turn(), 0.05)
    assert foreground.waiting == 0


async def test_a_client_polling_holds_no_step() -> None:
    foreground = Foreground(interval=INTERVAL)
    for _ in range(3):  # a client polling, a few requests an interval
        foreground.begin()
        await asyncio.wait_for(foreground.turn(), 0.05)
        foreground.end()
        await asyncio.sleep(INTERVAL / 2)
    assert foreground.waiting == 0


async def test_steps_go_one_an_interval_while_requests_last_then_together() -> None:
    foreground = Foreground(interval=INTERVAL)
    crowd(foreground)
    steps = [asyncio.create_task(foreground.turn()) for _ in range(4)]
    await asyncio.sleep(0)
    assert foreground.waiting == 4 and not any(step.done() for step in steps)
    steps[0].cancel()  # a cancelled step is skipped when its turn comes

    await asyncio.wait(steps[1:], return_when=asyncio.FIRST_COMPLETED, timeout=5)
    assert [step.done() for step in steps[1:]] == [True, False, False]  # one through, in order
    assert foreground.waiting == 2

    disperse(foreground)
    assert foreground.requests == 0 and not foreground.quiet()  # answered a moment ago
    await asyncio.sleep(0)
    assert not any(step.done() for step in steps[2:])  # its client's next request may be coming
    await asyncio.wait_for(asyncio.gather(*steps[2:]), 5)  # quiet at the next tick: both go
    assert foreground.quiet() and foreground.waiting == 0


async def test_once_quiet_the_waiting_steps_go_in_bursts() -> None:
    foreground = Foreground(interval=INTERVAL)
    crowd(foreground)
    steps = [asyncio.create_task(foreground.turn()) for _ in range(BURST + 4)]
    await asyncio.sleep(0)
    disperse(foreground)
    late = asyncio.create_task(foreground.turn())  # quiet soon, but others wait: it queues
    await asyncio.wait(steps, return_when=asyncio.FIRST_COMPLETED, timeout=5)
    assert sum(step.done() for step in steps) == BURST  # never all at once
    await asyncio.wait_for(asyncio.gather(*steps, late), 5)


async def test_a_tick_that_comes_late_is_not_taken_for_quiet() -> None:
    foreground = Foreground(interval=INTERVAL)
    crowd(foreground)
    steps = [asyncio.create_task(foreground.turn()) for _ in range(3)]
    await asyncio.sleep(0)
    disperse(foreground)
    # The loop is busy past the tick's time (a long step, a collection): requests could be
    # waiting unread on its sockets, although none is in progress and quiet() says so.
    time.sleep(INTERVAL * 1.8)  # noqa: ASYNC251 (blocking the loop is the point)
    assert foreground.quiet()
    await asyncio.wait(steps, return_when=asyncio.FIRST_COMPLETED, timeout=5)
    assert [step.done() for step in steps] == [True, False, False]
    await asyncio.wait_for(asyncio.gather(*steps), 5)  # the next tick is on time: they go


async def test_the_middleware_marks_a_request_until_its_response_starts() -> None:
    foreground = Foreground(interval=INTERVAL)
    seen: dict[str, int] = {}

    async def answer(request: Request) -> JSONResponse:
        seen["answer"] = foreground.requests
        return JSONResponse({"ok": True})

    async def fail(request: Request) -> JSONResponse:
        raise RuntimeError("boom")

    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first\n"
            # The response started before its first chunk was sent: a stream is foreground
            # only until then, so an open event stream never holds the runs back.
            seen["streaming"] = foreground.requests
            yield b"second\n"

        return StreamingResponse(chunks())

    routes = [Route("/answer", answer), Route("/fail", fail), Route("/stream", stream)]
    app = ForegroundRequests(Starlette(routes=routes), foreground)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/answer")).status_code == 200
        assert (await client.get("/fail")).status_code == 500
        assert (await client.get("/stream")).text == "first\nsecond\n"
    assert seen == {"answer": 1, "streaming": 0}
    assert foreground.requests == 0  # the failed request was let go too


async def test_a_woken_run_waits_while_a_request_is_in_progress(make_swarm: SwarmFactory) -> None:
    swarm = make_swarm(
        ScriptedChatModel(
            {"ceo": [delegate(cto="Write the plan"), deliver("ok")], "cto": [deliver("plan")]}
        )
    )
    run = await swarm.start("Plan")
    [plan] = await swarm.pending(run.id)
    swarm.foreground.interval = INTERVAL
    crowd(swarm.foreground)  # two requests are being answered
    await swarm.decide(plan.id, "approve")
    decided = [e.type for e in await swarm.events(run.id)]
    await asyncio.sleep(INTERVAL / 4)
    assert swarm.foreground.waiting == 1  # the run's next step waits for its turn
    assert [e.type for e in await swarm.events(run.id)] == decided  # and nothing moved

    disperse(swarm.foreground)
    await asyncio.wait_for(swarm.idle(run.id), 10)
    [final] = await swarm.pending(run.id)  # the plan was carried out, the CEO delivers
    assert (final.role, final.kind, final.payload["result"]) == ("ceo", "deliverable", "ok")
