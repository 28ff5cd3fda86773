"""What the channels tell people: a `Notice` is one event of the log (a proposal created,
reminded, escalated, expired or decided; a run done or failed) with the records it is about,
read when it is delivered, and the words every chat channel shows for it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qapten.proposals import ALLOWED_DECISIONS, Proposal, ProposalStatus
from qapten.store.base import Event, Run

CLOSING = frozenset({"proposal.decided", "proposal.expired", "proposal.cancelled"})
"""Events after which a proposal takes no decision: its messages lose their buttons."""
ASKING = frozenset({"proposal.created", "proposal.reminder", "proposal.escalated"})
"""Events whose messages offer the decisions (while the proposal is pending)."""
SHOWN_PAYLOAD = 600
"""Characters of a proposal's payload shown in a chat message."""

_DONE = {
    ProposalStatus.APPROVED: "✅ approved",
    ProposalStatus.EDITED: "✏️ approved with edits",
    ProposalStatus.REJECTED: "❌ rejected",
    ProposalStatus.REVISION_REQUESTED: "🔁 sent back for revision",
    ProposalStatus.ANSWERED: "💬 answered",
    ProposalStatus.EXPIRED: "⌛ expired",
    ProposalStatus.CANCELLED: "🚫 cancelled",
}


@dataclass(frozen=True)
class Notice:
    event: Event
    run: Run | None
    proposal: Proposal | None
    """The proposal as it is now (a ``proposal.*`` event's), or None."""
    links: Mapping[str, str] = field(default_factory=dict)
    """Decision → signed one-click link, for destinations that carry links."""

    @property
    def type(self) -> str:
        return self.event.type

    @property
    def closes(self) -> bool:
        """The proposal's messages must now show its outcome and lose their buttons."""
        return self.type in CLOSING

    @property
    def open_for_decision(self) -> bool:
        """The notice may offer decisions: its proposal is still pending."""
        return self.proposal is not None and self.proposal.status is ProposalStatus.PENDING

    def headline(self) -> str:
        """One line: what happened."""
        proposal = self.proposal
        if proposal is not None:
            about = f"{proposal.role} · {proposal.kind.value} {proposal.act}: {proposal.title}"
            match self.type:
                case "proposal.reminder":
                    return f"⏰ Still waiting for a decision — {about}"
                case "proposal.escalated":
                    to = self.event.data.get("to") or proposal.escalated_to or "the admins"
                    return f"⤴️ Escalated to {to} — {about}"
                case (
                    "proposal.created"
                    | "proposal.decided"
                    | "proposal.expired"
                    | "proposal.cancelled"
                ):
                    return about
        run = self.run
        mission = "" if run is None else f": {shorten(run.mission, 200)}"
        match self.type:
            case "run.done":
                return f"🏁 Run {self.event.run_id} done{mission}"
            case "run.failed":
                error = self.event.data.get("error") or (run.error if run else None) or ""
                return f"💥 Run {self.event.run_id} failed{mission}" + (
                    f" — {shorten(error, 300)}" if error else ""
                )
        return f"{self.type} in run {self.event.run_id}"

    def details(self) -> str:
        """The proposal's payload, cut short, for the message body ('' when there is none)."""
        if self.proposal is None:
            return ""
        shown = json.dumps(self.proposal.payload, indent=1, ensure_ascii=False)
        return shorten(shown, SHOWN_PAYLOAD)

    def outcome(self) -> str:
        """'✅ approved by alice', and the like; '' while the proposal is pending."""
        return outcome(self.proposal) if self.proposal is not None else ""

    def decisions(self) -> list[str]:
        """The one-tap decisions to offer (approve, reject, revise, answer), or none."""
        proposal = self.proposal
        if proposal is None or not self.open_for_decision or self.type not in ASKING:
            return []
        allowed = ALLOWED_DECISIONS[proposal.kind]
        return [d for d in ("approve", "reject", "revise", "answer") if d in allowed]

    def as_json(self) -> dict[str, Any]:
        """The notice as a webhook sends it."""
        body: dict[str, Any] = {
            "type": self.type,
            "event_id": self.event.id,
            "run_id": self.event.run_id,
            "at": self.event.created_at.isoformat(),
            "data": self.event.data,
            "text": self.headline(),
        }
        if self.proposal is not None:
            body["proposal"] = self.proposal.model_dump(
                mode="json", exclude={"payload_hash", "approved_hash", "remind_at"}
            )
        if self.run is not None:
            run = self.run
            body["run"] = {"id": run.id, "status": run.status, "mission": run.mission}
        if self.links:
            body["links"] = dict(self.links)
        return body


def outcome(proposal: Proposal) -> str:
    """How a proposal ended, and by whom: '✅ approved by alice'; '' while it is pending."""
    if proposal.status is ProposalStatus.PENDING:
        approvals = ", ".join(approval.by for approval in proposal.approvals)
        return f"approvals so far: {approvals}" if approvals else ""
    said = _DONE[proposal.status]
    by = f" by {proposal.decided_by}" if proposal.decided_by else ""
    feedback = f": {shorten(proposal.feedback, 300)}" if proposal.feedback else ""
    return f"{said}{by}{feedback}"


def shorten(text: str, limit: int) -> str:
    """`text` as it is if it has at most `limit` characters, else cut to `limit` with a '…'."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
