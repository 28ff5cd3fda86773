"""The event log: as JSON pages (``?after=ID``) or live as Server-Sent Events.

A stream resumes after ``Last-Event-ID`` (or ``?after=``): event ids grow strictly, so a client
that reconnects gets every event it missed, once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from sse_starlette import EventSourceResponse

from qapten.api.deps import Caller, Context
from qapten.api.errors import QaptenRoute
from qapten.api.schemas import EventPublic, Page

router = APIRouter(tags=["events"], route_class=QaptenRoute)

# Event ids are 64-bit integers in the database; a larger value is a bad request, not a crash.
After = Annotated[int | None, Query(ge=0, le=2**63 - 1, description="Only events after this id.")]
LastEventId = Annotated[str | None, Header(alias="Last-Event-ID", pattern=r"^\d{1,18}$")]
Limit = Annotated[int, Query(ge=1, le=1000)]

_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON pages, or a live stream when the request accepts text/event-stream.",
        "content": {"text/event-stream": {}},
    }
}


@router.get("/events", response_model=Page[EventPublic], responses=_STREAM_DOC)
async def all_events(
    request: Request,
    context: Context,
    _caller: Caller,
    after: After = None,
    last_event_id: LastEventId = None,
    limit: Limit = 200,
) -> Any:
    """Every run's events in order."""
    return await _events(request, context, None, after, last_event_id, limit)


@router.get("/runs/{run_id}/events", response_model=Page[EventPublic], responses=_STREAM_DOC)
async def run_events(
    run_id: str,
    request: Request,
    context: Context,
    _caller: Caller,
    after: After = None,
    last_event_id: LastEventId = None,
    limit: Limit = 200,
) -> Any:
    """One run's events in order."""
    await context.swarm.run(run_id)  # 404 for an unknown run
    return await _events(request, context, run_id, after, last_event_id, limit)


async def _events(
    request: Request,
    context: Context,
    run_id: str | None,
    after: int | None,
    last_event_id: str | None,
    limit: int,
) -> Any:
    start = int(last_event_id) if last_event_id is not None else (after or 0)
    if "text/event-stream" in request.headers.get("accept", ""):
        return EventSourceResponse(_stream(context, run_id, start), ping=15)
    found = await context.swarm.store.events(run_id=run_id, after=start, limit=limit)
    items = [EventPublic.model_validate(e) for e in found]
    next_cursor = str(items[-1].id) if len(items) == limit else None
    return Page[EventPublic](items=items, next_cursor=next_cursor)


async def _stream(
    context: Context, run_id: str | None, after: int
) -> AsyncIterator[dict[str, str]]:
    store, poll = context.swarm.store, context.settings.event_poll_seconds
    while True:
        batch = await store.events(run_id=run_id, after=after, limit=500)
        for event in batch:
            after = event.id
            data = EventPublic.model_validate(event).model_dump(mode="json")
            yield {"id": str(event.id), "event": event.type, "data": json.dumps(data)}
        if not batch:
            await asyncio.sleep(poll)
