"""Runs: start one on a mission, list them, look inside one, cancel one, retry a failed one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from qapten.api.deciding import start_as
from qapten.api.deps import Caller, Context, Cursor, Writer
from qapten.api.errors import ApiError, QaptenRoute
from qapten.api.schemas import (
    Page,
    ProposalPublic,
    RunCreate,
    RunDetail,
    RunPublic,
    TaskPublic,
    keyset_page,
)
from qapten.errors import RunNotRetryable

router = APIRouter(prefix="/runs", tags=["runs"], route_class=QaptenRoute)

RUN_STATUSES = ("running", "waiting", "done", "failed", "cancelled")


@router.post("", status_code=201, response_model=RunPublic)
async def start_run(body: RunCreate, context: Context, caller: Writer) -> RunPublic:
    """Start a run; it advances in the background. Returns at once with the run's id."""
    if not body.mission.strip():
        raise ApiError(422, "invalid_request", "mission: the mission is blank")
    return RunPublic.model_validate(await start_as(context.swarm, caller, body.mission))


@router.get("", response_model=Page[RunPublic])
async def list_runs(
    context: Context,
    _caller: Caller,
    cursor: Cursor,
    status: Annotated[str | None, Query(pattern="^(" + "|".join(RUN_STATUSES) + ")$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Page[RunPublic]:
    """Runs, newest first, a page at a time."""
    runs = await context.swarm.store.list_runs(status, before=cursor, limit=limit + 1)
    return keyset_page(RunPublic, runs, limit)


@router.get("/{run_id}", response_model=RunDetail)
async def get_run(run_id: str, context: Context, _caller: Caller) -> RunDetail:
    """A run with its task tree, its proposals and the tokens each role spent."""
    swarm = context.swarm
    run = await swarm.run(run_id)
    tasks = [TaskPublic.model_validate(t) for t in await swarm.tasks(run_id)]
    proposals = await swarm.store.list_proposals(run_id=run_id)
    return RunDetail(
        **RunPublic.model_validate(run).model_dump(),
        tasks=tasks,
        tokens=await swarm.tokens(run_id),
        proposals=[ProposalPublic.model_validate(p) for p in proposals],
    )


@router.post("/{run_id}/cancel", response_model=RunPublic)
async def cancel_run(run_id: str, context: Context, caller: Writer) -> RunPublic:
    """Cancel a run: its pending proposals are cancelled and no further step starts."""
    return RunPublic.model_validate(await context.swarm.cancel(run_id, by=caller.name))


@router.post("/{run_id}/retry", response_model=RunPublic, responses={404: {}, 409: {}})
async def retry_run(run_id: str, context: Context, caller: Writer) -> RunPublic:
    """Retry a failed run from where it stopped: its failed tasks think again (409 otherwise)."""
    try:
        run = await context.swarm.retry(run_id, by=caller.name)
    except RunNotRetryable as exc:
        raise ApiError(409, "not_retryable", str(exc), details={"status": exc.status}) from None
    return RunPublic.model_validate(run)
