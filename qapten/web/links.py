"""The pages behind signed decision links (qapten.api.links): ``GET /links/TOKEN`` shows the
proposal and asks to confirm; ``POST /links/TOKEN`` (the page's form) decides.

A GET never decides, so a chat app or mail client that fetches the link to preview it changes
nothing. The pages work without JavaScript and without a bearer token: the token in the URL is
the credential. The form needs no CSRF token either: a forged POST would have to carry that
unguessable signed token, which only its recipient has, and it works once.

Every outcome is a page with its status: 200 decided (or an approval recorded toward a quorum);
400 altered link; 403 may not decide; 404 no such proposal, or links off; 409 used already, or
decided already; 410 expired; 422 a decision the proposal does not take.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse

from qapten.api.deciding import ApprovedTwice, Forbidden, decide_as
from qapten.api.deps import ApiContext, refuse
from qapten.api.links import LINK_PAGE, LINKS_PATH, BadLink, ExpiredLink, LinkClaim
from qapten.errors import (
    InvalidDecision,
    ProposalAlreadyDecided,
    ProposalNotFound,
    QaptenError,
)
from qapten.proposals import Approve, Proposal, ProposalStatus, Reject
from qapten.web.pages import PAGE_HEADERS, TEMPLATES

__all__ = ["link_pages"]

# Never worth indexing, and never worth showing anyone else.
_HEADERS = {**PAGE_HEADERS, "X-Robots-Tag": "noindex, nofollow"}
PAYLOAD_SHOWN = 4000
"""Characters of the payload shown on a page; the inbox shows it whole."""
MAX_FEEDBACK = 20_000

Token = Annotated[str, PathParam(min_length=1)]


@dataclass
class _Page(Exception):
    """A page to answer with; raised by a step that cannot go on."""

    status: int
    heading: str
    message: str
    proposal: Proposal | None = None
    claim: LinkClaim | None = None
    refusal: str | None = field(default=None)
    """A refusal to record as an ``access.refused`` event (POST only: a GET records nothing)."""


def link_pages(context: ApiContext) -> APIRouter:
    """The pages of decision links, at ``/links/{token}``, over `context`'s swarm and tokens."""
    web = APIRouter(include_in_schema=False)

    def render(request: Request, page: _Page, *, action: str = "") -> HTMLResponse:
        proposal, claim = page.proposal, page.claim
        values: dict[str, Any] = {
            "title": page.heading,
            "heading": page.heading,
            "message": page.message,
            "status": page.status,
            "action": action,
            "decision": claim.decision if claim else "",
            "who": claim.who if claim else "",
            "proposal": None if proposal is None else _shown(proposal),
        }
        return TEMPLATES.TemplateResponse(
            request, "link.html", values, status_code=page.status, headers=_HEADERS
        )

    async def check(token: str) -> tuple[LinkClaim, Proposal]:
        """The link's claim and its proposal, or the page that says why not."""
        if context.links is None:
            raise _Page(404, "Links are off", "This server does not accept decision links.")
        try:
            claim = context.links.read(token, context.settings.links_ttl_seconds)
        except ExpiredLink as exc:
            message = "This link has expired. Ask for a new one, or decide in the inbox."
            raise _Page(410, "Link expired", message, refusal=str(exc)) from exc
        except BadLink as exc:
            raise _Page(400, "Invalid link", f"{str(exc).capitalize()}.", refusal=str(exc)) from exc
        try:
            proposal = await context.swarm.proposal(claim.proposal_id)
        except ProposalNotFound as exc:
            message = "The proposal of this link does not exist here."
            raise _Page(404, "No such proposal", message, claim=claim) from exc
        return claim, proposal

    async def record(request: Request, page: _Page) -> None:
        if page.refusal is None:
            return
        who = page.claim.who if page.claim else None
        run_id = page.proposal.run_id if page.proposal else None
        # `refuse` makes the error a route would raise; a page answers instead. The event
        # leaves the token out: anyone who may read events could use a link still good.
        await refuse(
            context,
            request,
            page.status,
            "link_refused",
            page.refusal,
            who=who,
            run_id=run_id,
            path=f"{LINKS_PATH}…",
        )

    @web.get(LINKS_PATH + "{token}", response_class=HTMLResponse, name=LINK_PAGE)
    async def confirm(request: Request, token: Token) -> HTMLResponse:
        """Show what the link would decide; only the form's POST decides."""
        try:
            claim, proposal = await check(token)
            if (used_by := await context.swarm.store.link_used_by(claim.nonce)) is not None:
                raise _used(claim, proposal, used_by)
            if proposal.status is not ProposalStatus.PENDING:
                status = proposal.status.value
                raise _decided_already(claim, proposal, status, proposal.decided_by)
        except _Page as refused:
            return render(request, refused)
        verb = claim.decision.capitalize()
        ask = f"{verb} this proposal as {claim.who}? Nothing is decided until you press {verb}."
        page = _Page(200, f"{verb} proposal?", ask, proposal, claim)
        action = request.url_for(LINK_PAGE, token=token).path
        if request.url.query:  # the team hint, for the form's POST to reach the same team
            action += f"?{request.url.query}"
        return render(request, page, action=action)

    @web.post(LINKS_PATH + "{token}", response_class=HTMLResponse)
    async def decide(request: Request, token: Token) -> HTMLResponse:
        try:
            page = await decide_by_link(request, token)
        except _Page as refused:
            await record(request, refused)
            return render(request, refused)
        return render(request, page)

    async def decide_by_link(request: Request, token: str) -> _Page:
        claim, proposal = await check(token)
        store = context.swarm.store
        if not await store.use_link(claim.nonce, proposal.id, claim.who, run_id=proposal.run_id):
            used_by = await store.link_used_by(claim.nonce) or claim.who
            raise _used(claim, proposal, used_by)
        # Checked after the link is used: a refused link is spent, like a used one.
        decider = context.tokens.by_name(claim.who)
        if decider is None:
            message = f"{claim.who} no longer has a token here, so may not decide"
            raise _Page(403, "Not allowed", f"{message}.", proposal, claim, refusal=message)
        feedback = await _feedback(request)
        decision = Approve() if claim.decision == "approve" else Reject(feedback=feedback)
        try:
            decided = await decide_as(context.swarm, decider, proposal.id, decision)
        except Forbidden as exc:
            raise _Page(
                403, "Not allowed", f"{exc.message}.", proposal, claim, exc.message
            ) from exc
        except ApprovedTwice as exc:
            names = ", ".join(exc.approvals)
            message = f"{claim.who} approved this already (approvals so far: {names})."
            raise _Page(409, "Approved already", message, proposal, claim) from exc
        except ProposalAlreadyDecided as exc:
            raise _decided_already(claim, proposal, exc.status, exc.decided_by) from exc
        except InvalidDecision as exc:
            raise _Page(422, "Cannot decide", f"{exc}.", proposal, claim) from exc
        except QaptenError as exc:  # the proposal vanished meanwhile, and the like
            raise _Page(400, "Cannot decide", f"{exc}.", proposal, claim) from exc
        if decided.status is ProposalStatus.PENDING:  # an approval short of a quorum
            quorum = decided.quorum
            needed = f" of the {quorum.required} needed" if quorum else ""
            message = (
                f"{claim.who}'s approval is recorded: {len(decided.approvals)}{needed}. "
                "The proposal waits for the others."
            )
            return _Page(200, "Approval recorded", message, decided, claim)
        done = "Approved" if decided.status is ProposalStatus.APPROVED else "Rejected"
        message = f"{done} by {claim.who}. The run goes on; you can close this page."
        return _Page(200, done, message, decided, claim)

    return web


def _used(claim: LinkClaim, proposal: Proposal, used_by: str) -> _Page:
    message = f"This link was used already (by {used_by}): each link works once"
    return _Page(409, "Link used already", f"{message}.", proposal, claim, refusal=message)


def _decided_already(
    claim: LinkClaim, proposal: Proposal, status: str, decided_by: str | None
) -> _Page:
    by = f" by {decided_by}" if decided_by else ""
    message = f"This proposal is already {status}{by}; this link changed nothing."
    return _Page(409, "Decided already", message, proposal, claim)


async def _feedback(request: Request) -> str:
    """The optional reason typed on the reject page (a form body; the app limits its size)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return parse_qs(body).get("feedback", [""])[0].strip()[:MAX_FEEDBACK]


def _shown(proposal: Proposal) -> dict[str, str]:
    payload = json.dumps(proposal.payload, indent=2, ensure_ascii=False)
    if len(payload) > PAYLOAD_SHOWN:
        payload = payload[:PAYLOAD_SHOWN] + "\n…"
    return {
        "id": proposal.id,
        "role": proposal.role,
        "kind": proposal.kind.value,
        "act": proposal.act,
        "title": proposal.title,
        "payload": payload,
        "status": proposal.status.value,
        "run_id": proposal.run_id,
    }
