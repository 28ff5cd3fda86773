"""Proposals (what an agent asks the human to decide) and decisions (the human's answer).

One status machine serves every kind of proposal::

    pending ──approve──▶ approved        ──reject──▶ rejected
            ──edit─────▶ edited          ──revise──▶ revision_requested
            ──answer───▶ answered        (expired and cancelled come from the engine)

A decision is a tagged union, never a bare boolean, so that what the human meant is kept.

A proposal may carry a deadline (`expires_at`: at it, the proposal expires or escalates, see
`qapten.deadlines`) and a quorum: an act that needs M of N named approvers stays pending while
approvals gather, each approver counted once; the M-th approves it, and one reject or revise
by a named approver ends it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from qapten.errors import InvalidDecision
from qapten.policy import ActKind, Quorum


class ProposalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    EDITED = "edited"
    REJECTED = "rejected"
    REVISION_REQUESTED = "revision_requested"
    ANSWERED = "answered"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def executes(self) -> bool:
        """True when the proposed act is to be carried out (as proposed or as edited)."""
        return self in (ProposalStatus.APPROVED, ProposalStatus.EDITED)


class _DecisionBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Approve(_DecisionBase):
    """Carry out the proposal exactly as proposed."""

    decision: Literal["approve"] = "approve"


class Reject(_DecisionBase):
    """Do not do it; the agent is told why and chooses another way."""

    decision: Literal["reject"] = "reject"
    feedback: str = ""


class Revise(_DecisionBase):
    """Redo the work taking the feedback into account."""

    decision: Literal["revise"] = "revise"
    feedback: str = Field(min_length=1)


class Edit(_DecisionBase):
    """Carry out this payload instead; it must fit the act's argument schema."""

    decision: Literal["edit"] = "edit"
    payload: dict[str, Any]


class Answer(_DecisionBase):
    """The human's answer to a question."""

    decision: Literal["answer"] = "answer"
    text: str = Field(min_length=1)


Decision = Annotated[Approve | Reject | Revise | Edit | Answer, Field(discriminator="decision")]
_decision_adapter: TypeAdapter[Approve | Reject | Revise | Edit | Answer] = TypeAdapter(Decision)

AUTO_DECIDER = "policy:auto"
"""`decided_by` of acts the autonomy policy let through without a human."""
DEADLINE_DECIDER = "policy:deadline"
"""`decided_by` of proposals that expired: nobody decided them in time."""
ADMINS = "@admins"
"""`escalated_to` of a proposal that only admins may decide (never a role name: no '@')."""

DECISION_STATUS: dict[str, ProposalStatus] = {
    "approve": ProposalStatus.APPROVED,
    "edit": ProposalStatus.EDITED,
    "reject": ProposalStatus.REJECTED,
    "revise": ProposalStatus.REVISION_REQUESTED,
    "answer": ProposalStatus.ANSWERED,
}

# Which decisions make sense for which kind: a question is answered (or waved off), not approved.
ALLOWED_DECISIONS: dict[ActKind, frozenset[str]] = {
    ActKind.PLAN: frozenset({"approve", "edit", "reject", "revise"}),
    ActKind.ACTION: frozenset({"approve", "edit", "reject", "revise"}),
    ActKind.DELIVERABLE: frozenset({"approve", "edit", "reject", "revise"}),
    ActKind.QUESTION: frozenset({"answer", "reject"}),
    # Go on with the tokens proposed (approve) or another amount (edit), or stop (reject).
    ActKind.BUDGET: frozenset({"approve", "edit", "reject"}),
}


def parse_decision(
    value: str | Mapping[str, Any] | _DecisionBase,
) -> Approve | Reject | Revise | Edit | Answer:
    """Accept a Decision object, a mapping like ``{"decision": "reject", "feedback": ...}``, or
    the bare word ``"approve"``."""
    if isinstance(value, Approve | Reject | Revise | Edit | Answer):
        return value
    if isinstance(value, str):
        if value != "approve":
            msg = (
                f"decision {value!r} needs details: pass Reject(feedback), Revise(feedback), "
                "Edit(payload) or Answer(text); only 'approve' may be given as a bare word"
            )
            raise InvalidDecision(msg)
        return Approve()
    try:
        return _decision_adapter.validate_python(value)
    except ValueError as exc:
        msg = f"invalid decision {value!r}: {exc}"
        raise InvalidDecision(msg) from exc


class NotAnApprover(InvalidDecision):
    """The act needs a quorum and the decider is not one of its named approvers."""


class AlreadyApproved(InvalidDecision):
    """This approver approved the act already: an approver counts once."""


def check_quorum(proposal: Proposal, decision: str, by: str) -> None:
    """Refuse a decision on an act with a quorum that only a named approver may take, and
    edits: the others approved (or will approve) the payload as proposed, not someone's edit."""
    quorum = proposal.quorum
    if quorum is None:
        return
    if by not in quorum.approvers:
        msg = (
            f"{by} is not an approver of proposal {proposal.id}: it needs {quorum.required} of "
            f"{', '.join(quorum.approvers)}"
        )
        raise NotAnApprover(msg)
    if decision == "edit":
        msg = (
            f"proposal {proposal.id} needs {quorum.required} approvals, so it cannot be edited: "
            "approve it, reject it, or ask for a revision with your changes"
        )
        raise InvalidDecision(msg)


def payload_hash(payload: Any) -> str:
    """SHA-256 of the canonical JSON of `payload`: the engine executes only what was approved."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Approval(BaseModel):
    """One named approver's approval of an act that needs a quorum."""

    model_config = ConfigDict(frozen=True)

    by: str
    at: datetime


class Proposal(BaseModel):
    """One proposal as stored, with its decision once there is one."""

    model_config = ConfigDict(frozen=True)

    id: str
    run_id: str
    task_id: str
    role: str
    kind: ActKind
    act: str
    """The act the model chose: ``delegate``, ``deliver``, ``ask_human`` or a tool's name."""
    title: str
    payload: dict[str, Any]
    payload_hash: str
    status: ProposalStatus
    created_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    feedback: str | None = None
    decided_payload: dict[str, Any] | None = None
    """The payload to execute: the proposal's own, or the human's edit."""
    approved_hash: str | None = None
    expires_at: datetime | None = None
    """When it expires or escalates if nobody decides it (the chart's `deadlines`)."""
    remind_at: datetime | None = None
    """When the next reminder is due; cleared once it is sent."""
    escalated_to: str | None = None
    """Past a deadline with ``on_expiry: escalate``: the role whose deciders now decide it, or
    `ADMINS`. None: the deciders of its own role."""
    quorum: Quorum | None = None
    """For an act that needs M of N named approvers (the chart's `quorum`)."""
    approvals: tuple[Approval, ...] = ()
    """The approvals recorded so far, in order; each approver once."""
