"""Proposals: the human's inbox, the decision on one, and one-click links to decide it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.routing import NoMatchFound

from qapten.api.deciding import Forbidden, decide_as
from qapten.api.deps import Caller, Context, Cursor, context_of, refuse
from qapten.api.errors import ApiError, QaptenRoute
from qapten.api.links import LINK_DECISIONS, LINK_PAGE, TEAM_HINT
from qapten.api.schemas import (
    DecisionCreate,
    LinksCreate,
    LinksPublic,
    Page,
    ProposalPublic,
    keyset_page,
)
from qapten.errors import ProposalAlreadyDecided
from qapten.proposals import ALLOWED_DECISIONS, Proposal, ProposalStatus

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
    proposal_id: str, body: DecisionCreate, request: Request, caller: Caller
) -> Proposal:
    """Approve, reject, revise, edit or answer. Returns once recorded; the run goes on behind.

    409 when someone decided first, or its deadline passed (the body says who and how); 403
    when the caller may not decide for the proposal's role (or, once escalated, for the role it
    went up to), or is not a named approver of an act with a quorum. For such an act, an
    approval short of the quorum is a 200 with the proposal still pending and its approvals;
    approving twice is a 409 ``already_approved``.
    """
    # The busiest route takes no dependency it can do without (FastAPI's cost is per
    # dependency): the context is read from the request, and the response model is made
    # from the proposal by FastAPI itself.
    context = context_of(request)
    try:
        decided = await decide_as(context.swarm, caller, proposal_id, body.to_decision())
    except Forbidden as exc:
        raise await refuse(
            context, request, 403, "forbidden", exc.message, who=caller.name, run_id=exc.run_id
        ) from exc
    return decided


@router.post(
    "/{proposal_id}/links",
    response_model=LinksPublic,
    responses={403: {}, 404: {}, 409: {}, 422: {}},
)
async def make_links(
    proposal_id: str, body: LinksCreate, request: Request, context: Context, caller: Caller
) -> LinksPublic:
    """One-click approve and reject links for the token named `for` to decide the proposal
    (admins only), to send to that person. Each opens a confirmation page, works once, and
    expires after ``links_ttl_seconds``; the decision is recorded as theirs.

    404 ``links_off`` when no ``links_secret`` is set; 409 when the proposal is no longer
    pending; 422 when `for` names no token, or one that may not decide this proposal.
    """
    if caller.scope != "admin":
        message = f"{caller.name} ({caller.scope}) may not make decision links"
        raise await refuse(context, request, 403, "forbidden", message, who=caller.name)
    signer = context.links
    if signer is None:
        raise ApiError(404, "links_off", "decision links are off: set QAPTEN_LINKS_SECRET")
    swarm = context.swarm
    await swarm.expire_due()  # a link made now must be for who may decide it now
    proposal = await swarm.proposal(proposal_id)
    if proposal.status is not ProposalStatus.PENDING:
        raise ProposalAlreadyDecided(proposal.id, proposal.status.value, proposal.decided_by)
    decider = context.tokens.by_name(body.for_)
    if decider is None:
        names = ", ".join(context.tokens.names())
        message = f"for: {body.for_!r} is not the name of a token (the names: {names})"
        raise ApiError(422, "invalid_request", message)
    # A link its holder could not use would only fail when clicked: refuse it now instead.
    refusal = decider.refusal(proposal)
    if refusal is not None:
        raise ApiError(422, "invalid_request", f"for: {refusal}")
    decisions = [d for d in LINK_DECISIONS if d in ALLOWED_DECISIONS[proposal.kind]]
    # Read before signing: the links' own timestamps can only be later, never earlier.
    expires_at = signer.expires_at(context.settings.links_ttl_seconds)
    # A click carries no bearer token: in a deployment of several teams, the link's query
    # names the team whose app its page is (qapten.api.teams); that app checks the link.
    team = f"?{TEAM_HINT}={swarm.team}" if swarm.team else ""
    try:
        urls = {
            d: str(request.url_for(LINK_PAGE, token=signer.make(proposal.id, decider.name, d)))
            + team
            for d in decisions
        }
    except NoMatchFound as exc:  # the router mounted alone, without create_app's pages
        message = "decision links are off: this app does not serve their pages (create_app does)"
        raise ApiError(404, "links_off", message) from exc
    await swarm.store.add_event(
        proposal.run_id,
        "links.made",
        {"proposal_id": proposal.id, "for": decider.name, "by": caller.name},
    )
    return LinksPublic(approve=urls.get("approve"), reject=urls["reject"], expires_at=expires_at)
