"""Request and response bodies: a Create / Public pair per resource, plus pages and errors."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Generic, Literal, Protocol, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field

from qapten.errors import InvalidDecision
from qapten.proposals import Answer, Approve, Decision, Edit, Reject, Revise

T = TypeVar("T")


class ErrorBody(BaseModel):
    code: str
    """Stable, for programs: not_found, already_decided, forbidden, invalid_request…"""
    message: str
    """For people."""
    details: dict[str, Any] | None = None


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mission: str = Field(min_length=1, max_length=10_000)


class RunPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    org: str
    mission: str
    status: str
    result: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime


class TaskPublic(BaseModel):
    id: str
    parent: str | None
    role: str
    brief: str
    status: str
    steps: int
    revisions: int
    children: list[str]
    proposal: str | None
    result: str | None
    error: str | None


class QuorumPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    required: int
    approvers: list[str]


class ApprovalPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    by: str
    at: datetime


class ProposalPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    run_id: str
    task_id: str
    role: str
    kind: str
    act: str
    title: str
    payload: dict[str, Any]
    payload_hash: str
    status: str
    created_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    feedback: str | None
    decided_payload: dict[str, Any] | None
    expires_at: datetime | None = None
    """When it expires (or escalates) if nobody decides it; null: it waits."""
    escalated_to: str | None = None
    """Past a deadline: the role whose deciders now decide it, or ``@admins``."""
    quorum: QuorumPublic | None = None
    """For an act that needs `required` approvals of the named `approvers`."""
    approvals: list[ApprovalPublic] = []
    """The approvals so far (acts with a quorum), each approver once."""


class RunDetail(RunPublic):
    tasks: list[TaskPublic]
    tokens: dict[str, int]
    """Tokens spent by each role in this run."""
    proposals: list[ProposalPublic]


class DecisionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject", "revise", "edit", "answer"]
    feedback: str | None = Field(None, max_length=20_000)
    """Why (reject), what to change (revise), or the answer (answer)."""
    payload: dict[str, Any] | None = None
    """The edited payload (edit); it must fit the act's argument schema."""

    def to_decision(self) -> Decision:
        match self.decision:
            case "approve":
                return Approve()
            case "reject":
                return Reject(feedback=self.feedback or "")
            case "edit":
                if self.payload is None:
                    raise InvalidDecision("an edit needs the edited 'payload'")
                return Edit(payload=self.payload)
        if not self.feedback:
            what = "the answer" if self.decision == "answer" else "what to change"
            msg = f"a {self.decision} decision needs 'feedback': {what}"
            raise InvalidDecision(msg)
        return (
            Answer(text=self.feedback)
            if self.decision == "answer"
            else Revise(feedback=self.feedback)
        )


class LinksCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    for_: str = Field(alias="for", min_length=1, max_length=200)
    """The name of the token whose holder the links decide as (and with whose rights)."""


class LinksPublic(BaseModel):
    approve: str | None
    """Opens a page that approves once confirmed; null for a question (it takes an answer)."""
    reject: str
    """Opens a page that rejects once confirmed."""
    expires_at: datetime
    """Both links stop working then; each works once."""


class EventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    run_id: str | None
    type: str
    data: dict[str, Any]
    created_at: datetime


class DeliveryPublic(BaseModel):
    """One notice owed to a chat channel or webhook, and how its delivery went."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    destination: str
    """``slack:CHANNEL``, ``telegram:CHAT_ID`` or ``webhook:NAME``."""
    event_id: int
    event_type: str
    run_id: str | None
    proposal_id: str | None
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    """Tries so far (a pending delivery with tries failed and waits for the next)."""
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None
    """Pass as ?cursor= to get the next page; null on the last page."""


class _Keyed(Protocol):
    created_at: datetime
    id: str | int


K = TypeVar("K", bound=BaseModel)


def keyset_page(model: type[K], found: Sequence[object], limit: int) -> Page[K]:
    """A page from `limit + 1` rows fetched newest first: the extra row only says there is more."""
    items = [model.model_validate(row) for row in found[:limit]]
    if len(found) <= limit:
        return Page[K](items=items)
    last = cast(_Keyed, items[-1])  # every paged model has created_at and id
    return Page[K](items=items, next_cursor=encode_cursor(last.created_at, last.id))


def encode_cursor(created_at: datetime, item_id: str | int) -> str:
    raw = json.dumps([created_at.isoformat(), item_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raises ValueError for a cursor this server did not make."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, item_id = json.loads(base64.urlsafe_b64decode(padded))
        return datetime.fromisoformat(at), str(item_id)
    except (ValueError, TypeError) as exc:
        msg = f"invalid cursor {cursor!r}: pass the next_cursor of a previous page"
        raise ValueError(msg) from exc
