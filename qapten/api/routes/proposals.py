"""Proposals: the human's inbox, and the decision on one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from qapten.api.deps import Caller, Context, Cursor, refuse
from qapten.api.errors import ApiError, QaptenRoute
from qapten.api.schemas import DecisionCreate, Page, ProposalPublic, keyset_page
from qapten.proposals import AlreadyApproved, ProposalStatus

router = APIRouter(prefix="/proposals", tags=["proposals"], route_class=QaptenRoute)


@router.get("", response_model=Page[ProposalPublic])
async def list_proposals(
    context: Context,
    _caller: Caller,
    cursor: Cursor,
    status: ProposalStatus | None = None,
    role: Annotated[str | None, Query(max_length=100)] = None,
    run_id: Annotated[str | None, Query(max_length=100)] = None,
    kind: Annotated[str | None, Query(pattern="^(plan|action|deliverable|question)$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Page[ProposalPublic]:
    """Proposals, newest first, filtered, a page at a time."""
    found = await context.swarm.store.page_proposals(
        status=status,
        role=role,
        run_id=run_id,
        kind=kind,
        before=cursor,
        limit=limit + 1,
    )
    return keyset_page(ProposalPublic, found, limit)


@router.get("/{proposal_id}", response_model=ProposalPublic)
async def get_proposal(proposal_id: str, context: Context, _caller: Caller) -> ProposalPublic:
    return ProposalPublic.model_validate(await context.swarm.proposal(proposal_id))


@router.post(
    "/{proposal_id}/decision",
    response_model=ProposalPublic,
    responses={403: {}, 404: {}, 409: {}, 422: {}},
)
async def decide(
    proposal_id: str, body: DecisionCreate, request: Request, context: Context, caller: Caller
) -> ProposalPublic:
    """Approve, reject, revise, edit or answer. Returns once recorded; the run goes on behind.

    409 when someone decided first, or its deadline passed (the body says who and how); 403
    when the caller may not decide for the proposal's role (or, once escalated, for the role it
    went up to), or is not a named approver of an act with a quorum. For such an act, an
    approval short of the quorum is a 200 with the proposal still pending and its approvals;
    approving twice is a 409 ``already_approved``.
    """
    swarm = context.swarm
    await swarm.expire_due()  # who may decide depends on deadlines that passed (escalation)
    proposal = await swarm.proposal(proposal_id)
    refusal = caller.refusal(proposal)
    if refusal is not None:
        raise await refuse(
            context, request, 403, "forbidden", refusal, who=caller.name, run_id=proposal.run_id
        )
    try:
        decided = await swarm.decide(proposal_id, body.to_decision(), by=caller.name)
    except AlreadyApproved as exc:
        approvals = [approval.by for approval in (await swarm.proposal(proposal_id)).approvals]
        raise ApiError(409, "already_approved", str(exc), details={"approvals": approvals}) from exc
    return ProposalPublic.model_validate(decided)
