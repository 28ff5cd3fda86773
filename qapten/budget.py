"""Token budgets: a role, or a whole run, may spend so many tokens; then a human decides.

A chart sets ``budget: TOKENS`` at the top (for each run) or on a role (for that role's tasks in
one run, together). Before each model call the engine compares what the run has spent (the
tokens recorded with every proposal) with the budget plus whatever humans have added. At the
limit the task does not fail: it raises a ``budget`` proposal, ``{"scope", "spent", "budget",
"add_tokens"}``. Approve it to go on with ``add_tokens`` more, edit it to choose another amount,
reject it to stop the task.

Tasks that reach the same limit share one proposal, so one decision answers them all and a
grant is never counted twice.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import IntegrityError

from qapten.board import TaskStatus
from qapten.context import SwarmContext
from qapten.errors import InvalidDecision, field_problems
from qapten.policy import ActKind
from qapten.proposals import Proposal, ProposalStatus, payload_hash

BUDGET_ACT = "budget"
RUN_SCOPE = "run"
"""The scope of the chart-wide budget; a role's budget has the role's name as its scope."""


class BudgetRequest(BaseModel):
    """The payload of a budget proposal. A human's edit may change `add_tokens` only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scope: str
    """``run`` for the run's budget, else the role whose budget it is."""
    spent: int = Field(ge=0)
    """Tokens spent in that scope when the limit was reached."""
    budget: int = Field(ge=0)
    """The limit reached: the chart's budget plus what humans have added so far."""
    add_tokens: int = Field(gt=0, strict=True)
    """Tokens to add if the work is to go on; proposed: the overshoot plus one more budget."""

    @property
    def title(self) -> str:
        who = "the run" if self.scope == RUN_SCOPE else self.scope
        return (
            f"Budget: {who} spent {self.spent:,} of {self.budget:,} tokens; "
            f"continue with +{self.add_tokens:,}?"
        )


async def over_budget(ctx: SwarmContext, run_id: str, role_name: str) -> BudgetRequest | None:
    """The budget `role_name`'s next model call would exceed, if any (the run's first)."""
    limits = {RUN_SCOPE: ctx.chart.budget, role_name: ctx.chart.roles[role_name].budget}
    if all(limit is None for limit in limits.values()):
        return None  # the common case costs no query
    spent_by_role = await ctx.store.tokens_by_role(run_id)
    granted = _granted(await ctx.store.list_proposals(run_id=run_id, kind=ActKind.BUDGET))
    for scope, base in limits.items():
        if base is None:
            continue
        spent = sum(spent_by_role.values()) if scope == RUN_SCOPE else spent_by_role.get(scope, 0)
        limit = base + granted.get(scope, 0)
        if spent >= limit:
            # Enough to go on with a whole budget more from here, whatever the overshoot was.
            add = spent - limit + base
            return BudgetRequest(scope=scope, spent=spent, budget=limit, add_tokens=add)
    return None


def _granted(proposals: list[Proposal]) -> dict[str, int]:
    granted: dict[str, int] = {}
    for proposal in proposals:
        if proposal.status.executes and proposal.decided_payload is not None:
            scope = str(proposal.payload["scope"])
            granted[scope] = granted.get(scope, 0) + int(proposal.decided_payload["add_tokens"])
    return granted


async def budget_proposal(
    ctx: SwarmContext, run_id: str, task_id: str, role: str, step: int, request: BudgetRequest
) -> Proposal:
    """The proposal for `request`: made now, or by a task that reached the same limit first.

    Its id derives from the run, the scope and the limit, so parallel tasks cannot open two (the
    database refuses the second insert), and a limit a human refused stops every task at it.
    """
    digest = hashlib.sha256(f"{run_id}|{request.scope}|{request.budget}".encode()).hexdigest()
    payload = request.model_dump()
    proposal = Proposal(
        id=f"p_budget_{digest[:12]}",
        run_id=run_id,
        task_id=task_id,
        role=role,
        kind=ActKind.BUDGET,
        act=BUDGET_ACT,
        title=request.title,
        payload=payload,
        payload_hash=payload_hash(payload),
        status=ProposalStatus.PENDING,
        created_at=ctx.store.clock(),
    )
    try:
        return await ctx.store.create_proposal(proposal, step=step)
    except IntegrityError:
        return await ctx.store.get_proposal(proposal.id)


def edited_budget(proposal: Proposal, payload: dict[str, Any]) -> dict[str, Any]:
    """A human's edit of a budget proposal: the same request with another `add_tokens`."""
    try:
        wanted = BudgetRequest.model_validate({**proposal.payload, **payload})
    except ValidationError as exc:
        msg = f"invalid budget decision: {field_problems(exc.errors())}"
        raise InvalidDecision(msg) from exc
    return {**proposal.payload, "add_tokens": wanted.add_tokens}


def budget_outcome(proposal: Proposal) -> tuple[dict[str, Any], str | None]:
    """The task patch once a budget proposal is decided, go on or stop, and the note the role
    learns (when it goes on)."""
    request = BudgetRequest.model_validate(proposal.payload)
    who = "the run" if request.scope == RUN_SCOPE else request.scope
    if proposal.status.executes and proposal.decided_payload is not None:
        added = int(proposal.decided_payload["add_tokens"])
        note = f"The human added {added:,} tokens to the budget of {who}."
        return {"status": TaskStatus.THINKING.value}, note
    stop = {
        "status": TaskStatus.FAILED.value,
        "error": (
            f"stopped at the token budget: {who} spent {request.spent:,} of "
            f"{request.budget:,} tokens and {proposal.decided_by or 'a human'} chose to stop"
        ),
    }
    return stop, None
