"""Decisions and commands that come from a chat (Slack, Telegram), taken as the Qapten
identity the chat user is mapped to in the settings, through the same checks as the HTTP API
(qapten.api.deciding). Every answer is a line of text to show the user; a user's mistake is
never an exception.

The commands: ``/inbox``, ``/approve ID``, ``/reject ID [REASON]``, ``/revise ID FEEDBACK``,
``/answer ID TEXT``, ``/mission TEXT`` (for identities that may start runs) and ``/help``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from qapten.api.auth import Principal
from qapten.api.deciding import ApprovedTwice, Forbidden, decide_as, start_as
from qapten.api.deps import ApiContext
from qapten.channels.notices import outcome
from qapten.errors import InvalidDecision, ProposalAlreadyDecided, ProposalNotFound
from qapten.proposals import Answer, Approve, Decision, ProposalStatus, Reject, Revise

INBOX_SHOWN = 10
INBOX_SCANNED = 500
"""Pending proposals looked at for /inbox, newest first."""
MAX_TEXT = 20_000

HELP = """Commands:
/inbox — the proposals waiting for you
/approve ID — approve a proposal
/reject ID [reason] — reject it
/revise ID feedback — send it back with feedback
/answer ID text — answer a question
/mission text — start a run on a mission"""


@dataclass(frozen=True)
class Reply:
    text: str
    ok: bool
    """False when nothing was done (refused, unknown, already decided)."""


class ChatDesk:
    """Decides and runs commands for one chat channel. `users` maps the channel's user ids
    (as strings) to Qapten token names."""

    def __init__(self, context: ApiContext, channel: str, users: Mapping[str, str]) -> None:
        self.context = context
        self.channel = channel
        self._users = dict(users)

    def principal(self, user_id: str) -> Principal | None:
        """Who `user_id` acts as: their mapped token's holder, with that token's rights now."""
        name = self._users.get(user_id)
        return None if name is None else self.context.tokens.by_name(name)

    async def refuse(self, user_id: str, reason: str, *, run_id: str | None = None) -> Reply:
        """Record a refused attempt (an ``access.refused`` event, as the API records its own)."""
        await self.context.swarm.store.add_event(
            run_id,
            "access.refused",
            {
                "channel": self.channel,
                "user": user_id,
                "who": self._users.get(user_id),
                "reason": reason,
            },
        )
        return Reply(reason, ok=False)

    async def caller(self, user_id: str) -> Principal | Reply:
        """Who `user_id` acts as now; else the refusal to show them (a user the settings do not
        map, or one whose token is gone), recorded as `refuse` does."""
        principal = self.principal(user_id)
        if principal is not None:
            return principal
        if user_id in self._users:
            reason = f"{self._users[user_id]!r} has no Qapten token any more: nothing was done"
        else:
            reason = f"{self.channel} user {user_id} may not act here: nothing was done"
        return await self.refuse(user_id, reason)

    def decision(self, name: str, text: str) -> Decision:
        """The decision a button or command `name` takes (approve, reject, revise, answer), with
        `text` as its feedback or answer; a rejection without a reason names the channel.
        Raises `ValueError` for any other name (and for a revise or answer without text)."""
        match name:
            case "approve":
                return Approve()
            case "reject":
                return Reject(feedback=text or f"rejected from {self.channel.capitalize()}")
            case "revise":
                return Revise(feedback=text)
            case "answer":
                return Answer(text=text)
        raise ValueError(f"{name!r} is not a decision taken from a chat")

    async def decide(self, user_id: str, proposal_id: str, decision: Decision) -> Reply:
        caller = await self.caller(user_id)
        if isinstance(caller, Reply):
            return caller
        try:
            decided = await decide_as(self.context.swarm, caller, proposal_id, decision)
        except Forbidden as exc:
            return await self.refuse(user_id, exc.message, run_id=exc.run_id)
        except ProposalNotFound:
            return Reply(f"No proposal {proposal_id}.", ok=False)
        except ProposalAlreadyDecided as exc:
            by = f" by {exc.decided_by}" if exc.decided_by else ""
            return Reply(f"Already decided{by} ({exc.status}): nothing was done.", ok=False)
        except ApprovedTwice as exc:
            return Reply(
                f"You approved it already; approvals so far: {', '.join(exc.approvals)}.", ok=False
            )
        except InvalidDecision as exc:
            return Reply(str(exc), ok=False)
        if decided.status is ProposalStatus.PENDING:  # an approval toward a quorum
            quorum = decided.quorum
            need = f" of {quorum.required}" if quorum is not None else ""
            return Reply(f"Approval recorded ({len(decided.approvals)}{need}).", ok=True)
        return Reply(f"{outcome(decided)}: {decided.title}", ok=True)

    async def command(self, user_id: str, text: str) -> Reply | None:
        """Run the command `text`; None when `text` is not a command (no leading ``/``)."""
        text = text.strip()
        if not text.startswith("/"):
            return None
        word, _, rest = text[1:].partition(" ")
        name = word.split("@", 1)[0].lower()  # Telegram: /approve@QaptenBot in groups
        handler = self._commands().get(name)
        if handler is None:
            return Reply(f"Unknown command /{name}.\n{HELP}", ok=False)
        return await handler(user_id, rest.strip()[:MAX_TEXT])

    def _commands(self) -> dict[str, Callable[[str, str], Awaitable[Reply]]]:
        return {
            "help": self._help,
            "start": self._help,  # what Telegram sends when a user first opens the bot
            "inbox": self._inbox,
            "approve": self._approve,
            "reject": self._reject,
            "revise": self._revise,
            "answer": self._answer,
            "mission": self._mission,
        }

    async def _help(self, _user_id: str, _rest: str) -> Reply:
        return Reply(HELP, ok=True)

    async def _inbox(self, user_id: str, _rest: str) -> Reply:
        caller = await self.caller(user_id)
        if isinstance(caller, Reply):
            return caller
        swarm = self.context.swarm
        await swarm.expire_due()
        # The newest first, and a bounded number of them: an inbox of 100,000 is not read
        # whole for a chat message of ten lines.
        pending = await swarm.store.page_proposals(
            status=ProposalStatus.PENDING, limit=INBOX_SCANNED + 1
        )
        mine = [p for p in pending[:INBOX_SCANNED] if caller.refusal(p) is None]
        if not mine:
            more = " among the newest" if len(pending) > INBOX_SCANNED else ""
            return Reply(f"Nothing waits for you{more}.", ok=True)
        lines = [f"{p.id} · {p.role} · {p.kind.value} {p.act}: {p.title}" for p in mine]
        rest = len(lines) - INBOX_SHOWN
        shown = "\n".join(lines[:INBOX_SHOWN]) + (f"\n… and {rest} more" if rest > 0 else "")
        count = f"{len(mine)}+" if len(pending) > INBOX_SCANNED else str(len(mine))
        return Reply(f"{count} waiting for you, newest first:\n{shown}", ok=True)

    async def _with_id(
        self, user_id: str, rest: str, usage: str, make: Callable[[str], Decision | None]
    ) -> Reply:
        proposal_id, _, text = rest.partition(" ")
        decision = make(text.strip()) if proposal_id else None
        if decision is None:
            return Reply(f"Write {usage}.", ok=False)
        return await self.decide(user_id, proposal_id, decision)

    async def _approve(self, user_id: str, rest: str) -> Reply:
        return await self._with_id(
            user_id, rest, "/approve ID", lambda _text: self.decision("approve", "")
        )

    async def _reject(self, user_id: str, rest: str) -> Reply:
        # Unlike a button's, a command's rejection without a reason keeps its feedback empty.
        return await self._with_id(
            user_id, rest, "/reject ID [reason]", lambda text: Reject(feedback=text)
        )

    async def _revise(self, user_id: str, rest: str) -> Reply:
        return await self._with_id(
            user_id, rest, "/revise ID what to change", self._texted("revise")
        )

    async def _answer(self, user_id: str, rest: str) -> Reply:
        return await self._with_id(user_id, rest, "/answer ID your answer", self._texted("answer"))

    def _texted(self, name: str) -> Callable[[str], Decision | None]:
        """`name`'s decision with the command's text; None (the usage is shown) without one."""
        return lambda text: self.decision(name, text) if text else None

    async def _mission(self, user_id: str, rest: str) -> Reply:
        caller = await self.caller(user_id)
        if isinstance(caller, Reply):
            return caller
        if not caller.can_write:
            reason = f"{caller.name} ({caller.scope}) may not start runs"
            return await self.refuse(user_id, reason)
        if not rest:
            return Reply("Write /mission what the company should do.", ok=False)
        run = await start_as(self.context.swarm, caller, rest, channel=self.channel)
        return Reply(f"Run {run.id} started: {rest[:200]}", ok=True)
