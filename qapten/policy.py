"""Autonomy: who decides each kind of act — the agent alone, a human approving its proposal, or
only a human. Budgets and other limits are in the org chart beside it; this is the policy's core.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Tag


class AutonomyLevel(StrEnum):
    """Who decides an act: the agent alone, a human approving the agent's proposal, or a human."""

    AUTO = "auto"
    APPROVE = "approve"
    HUMAN = "human"


class ActKind(StrEnum):
    """The kinds of act a role may propose."""

    PLAN = "plan"
    ACTION = "action"
    DELIVERABLE = "deliverable"
    QUESTION = "question"
    BUDGET = "budget"
    """Not chosen by a role: the engine asks whether work that reached a token budget goes on."""


def _action_kind(value: Any) -> str:
    return "per tool" if isinstance(value, Mapping) else "level"


class Autonomy(BaseModel):
    """Who decides each kind of act of one role. A question always goes to the human."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    plan: AutonomyLevel = AutonomyLevel.APPROVE
    """Splitting a task among the role's direct reports."""
    action: Annotated[
        Annotated[AutonomyLevel, Tag("level")]
        | Annotated[dict[str, AutonomyLevel], Tag("per tool")],
        Discriminator(_action_kind),
    ] = AutonomyLevel.APPROVE
    """Calling a tool: one level for every tool, or a level per tool name (others: approve)."""
    deliverable: AutonomyLevel = AutonomyLevel.AUTO
    """Handing in the result of a task."""

    def level_for(self, kind: ActKind, tool: str | None = None) -> AutonomyLevel:
        """The level that applies to an act of `kind` (for an action, a call of `tool`)."""
        if kind in (ActKind.QUESTION, ActKind.BUDGET):
            return AutonomyLevel.HUMAN
        if kind == ActKind.PLAN:
            return self.plan
        if kind == ActKind.DELIVERABLE:
            return self.deliverable
        if isinstance(self.action, AutonomyLevel):
            return self.action
        return self.action.get(tool or "", AutonomyLevel.APPROVE)
