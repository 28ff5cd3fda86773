"""One way to decide a proposal as someone, and to start a run as someone, for every channel that
lets a human act: the JSON API, the signed links' pages and the chat channels (qapten.channels).
Who may do what is checked here, once, so that no channel can drift from the others.

Raises `Forbidden` when the decider may not decide the proposal, `ApprovedTwice` when an approver
of an act with a quorum approves again, and the engine's own errors (`ProposalNotFound`,
`ProposalAlreadyDecided`, `InvalidDecision`) as they come.
"""

from __future__ import annotations

from qapten.api.auth import Principal
from qapten.proposals import AlreadyApproved, Decision, Proposal
from qapten.store.base import Run
from qapten.swarm import Swarm


class Forbidden(Exception):
    """The decider may not decide this proposal (its role, an escalation, a quorum's names).
    Catch it to answer 403; nothing was recorded."""

    def __init__(self, message: str, run_id: str) -> None:
        super().__init__(message)
        self.message = message
        self.run_id = run_id


class ApprovedTwice(AlreadyApproved):
    """`AlreadyApproved`, with the names of those who approved so far (to tell the human)."""

    def __init__(self, message: str, approvals: list[str]) -> None:
        super().__init__(message)
        self.approvals = approvals


async def decide_as(
    swarm: Swarm, caller: Principal, proposal_id: str, decision: Decision
) -> Proposal:
    """Record `caller`'s `decision` on the proposal, if `caller` may decide it."""

    def may_decide(proposal: Proposal) -> None:
        refusal = caller.refusal(proposal)
        if refusal is not None:
            raise Forbidden(refusal, proposal.run_id)

    try:
        return await swarm.decide(proposal_id, decision, by=caller.name, check=may_decide)
    except AlreadyApproved as exc:
        approvals = [approval.by for approval in (await swarm.proposal(proposal_id)).approvals]
        raise ApprovedTwice(str(exc), approvals) from exc


async def start_as(swarm: Swarm, caller: Principal, mission: str, **about: str) -> Run:
    """Start a run on `mission` for `caller` (the API checked `can_write` already; a chat
    command checks it itself); `about` goes into the ``run.requested`` event (the channel)."""
    run = await swarm.start(mission)
    await swarm.store.add_event(run.id, "run.requested", {"by": caller.name, **about})
    return run
