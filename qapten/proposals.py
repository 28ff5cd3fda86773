"""Proposals (what an agent asks the human to decide) and decisions (the human's answer).

One status machine serves every kind of proposal::

    pending ──approve──▶ approved        ──reject──▶ rejected
            ──edit─────▶ edited          ──revise──▶ revision_requested
            ──answer───▶ answered        (expired and cancelled come from the engine)

A decision is a tagged union, never a bare boolean, so that what the human meant is kept.
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
from qapten.policy import ActKind


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


def payload_hash(payload: Any) -> str:
    """SHA-256 of the canonical JSON of `payload`: the engine executes only what was approved."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


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
