"""Autonomy: who decides each kind of act — the agent alone, a human approving its proposal, or
only a human — and, per kind of act or tool, how long a proposal may wait (`Deadline`) and how
many named approvers it needs (`Quorum`). Budgets are in the org chart beside it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Self, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    WithJsonSchema,
    model_validator,
)

from qapten.yaml_source import located_error


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


# -- deadlines and quorums: per kind of act, per tool, for one role ----------------------------

DURATION_PATTERN = r"^[1-9][0-9]*[smhd]$"
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
DEFAULT_RULE = "default"
"""The key of `deadlines` that covers every act the others do not name."""


MAX_DURATION = timedelta(days=365)
"""The longest wait a chart may give: longer is a mistake (and would overflow dates)."""


def _parse_duration(value: Any) -> Any:
    if isinstance(value, str) and re.fullmatch(DURATION_PATTERN, value):
        seconds = int(value[:-1]) * _UNIT_SECONDS[value[-1]]
        if seconds > MAX_DURATION.total_seconds():
            raise located_error(f"duration {value!r} is too long: at most 365d")
        return timedelta(seconds=seconds)
    if isinstance(value, timedelta) and timedelta(0) < value <= MAX_DURATION:
        return value  # built in Python rather than written in YAML
    msg = f"bad duration {_shown(value)}: write a whole number and a unit, like 30s, 10m, 2h or 1d"
    raise located_error(msg)


def _shown(value: Any) -> str:
    text = ascii(value)  # a look-alike or invisible character shows as an escape
    return text if len(text) <= 40 else f"{text[:37]}..."


def duration_text(delta: timedelta) -> str:
    """A duration as the chart writes it: ``30m``, ``2h``, ``90s``."""
    seconds = int(delta.total_seconds())
    unit, size = next((u, s) for u, s in _UNIT_SECONDS.items() if seconds % s == 0)
    return f"{seconds // size}{unit}"


Duration = Annotated[
    timedelta,
    BeforeValidator(_parse_duration),
    PlainSerializer(duration_text, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "examples": ["30m", "2h"]}),
]
"""A duration written ``30s``, ``10m``, ``2h`` or ``1d``."""


class OnExpiry(StrEnum):
    """What happens to a proposal nobody decided by its deadline."""

    REJECT = "reject"
    ESCALATE = "escalate"


class Deadline(BaseModel):
    """How long a proposal of the role waits for a human, and what happens then."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    expires_after: Duration
    """How long the proposal waits for a decision: 30s, 10m, 2h, 1d."""
    remind_before: Duration | None = None
    """Record a ``proposal.reminder`` event this long before the deadline (once per deadline)."""
    on_expiry: OnExpiry = OnExpiry.REJECT
    """reject: the proposal expires, nothing runs, the role is told and goes on. escalate: the
    deciders of the role's manager (of the root role: the admins only) decide it, with a new
    deadline; each deadline missed climbs one level, and past the admins it expires."""

    @model_validator(mode="after")
    def _reminder_in_time(self) -> Self:
        if self.remind_before is not None and self.remind_before >= self.expires_after:
            before, after = duration_text(self.remind_before), duration_text(self.expires_after)
            msg = f"remind_before ({before}) must be shorter than expires_after ({after})"
            raise located_error(msg, at=("remind_before",))
        return self


class Quorum(BaseModel):
    """M of N: the act runs once `required` of the named `approvers` approved it."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    required: int = Field(ge=1, strict=True)
    """How many distinct approvers must approve (M)."""
    approvers: tuple[Annotated[str, Field(min_length=1)], ...] = Field(min_length=1)
    """Who may decide (N): token names of the HTTP API, or the `by` of `Swarm.decide`."""

    @model_validator(mode="after")
    def _enough_approvers(self) -> Self:
        for index, name in enumerate(self.approvers):
            if name in self.approvers[:index]:
                raise located_error(f"approver {name!r} is listed twice", at=("approvers", index))
        if self.required > len(self.approvers):
            named = f"{len(self.approvers)}: {', '.join(self.approvers)}"
            msg = f"required ({self.required}) is more than the approvers named ({named})"
            raise located_error(msg, at=("required",))
        return self


R = TypeVar("R")


def rule_for(rules: Mapping[str, R], kind: ActKind, act: str) -> R | None:
    """The rule that applies to one act: its tool's entry, else its kind's, else `default`."""
    if kind is ActKind.ACTION and act in rules:
        return rules[act]
    return rules.get(kind.value, rules.get(DEFAULT_RULE))


def check_rules(
    role: str,
    tools: Sequence[str],
    autonomy: Autonomy,
    deadlines: Mapping[str, Deadline],
    quorum: Mapping[str, Quorum],
) -> None:
    """Refuse keys that name no act of the role, rules on acts the agent takes alone, and
    escalation of acts with a quorum (only their named approvers may decide them)."""
    kinds = [kind.value for kind in ActKind]
    for field, rules, allowed in (
        ("deadlines", deadlines, [*kinds, DEFAULT_RULE]),
        ("quorum", quorum, [k for k in kinds if k != ActKind.QUESTION]),
    ):
        for key in rules:
            if field == "quorum" and key == ActKind.QUESTION:
                msg = "a question is answered, not approved: it cannot need a quorum"
                raise located_error(msg, at=(field, key), at_key=True)
            if key not in allowed and key not in tools:
                listed = ", ".join(tools) or "none"
                msg = f"{key!r} is neither {', '.join(allowed)} nor a tool of role {role!r}"
                raise located_error(f"{msg} (its tools: {listed})", at=(field, key), at_key=True)
            if key != DEFAULT_RULE and _taken_alone(autonomy, key):
                msg = f"autonomy lets {role!r} take {key!r} acts alone: this would never apply"
                raise located_error(msg, at=(field, key), at_key=True)
    acts = [(kind, "") for kind in ActKind if kind is not ActKind.ACTION]
    for kind, act in [*acts, *((ActKind.ACTION, tool) for tool in tools)]:
        deadline = rule_for(deadlines, kind, act)
        if rule_for(quorum, kind, act) and deadline and deadline.on_expiry is OnExpiry.ESCALATE:
            key = act if act in quorum else kind.value
            msg = (
                f"{key!r} needs a quorum, so only its named approvers decide it: its deadline "
                "cannot escalate (use on_expiry: reject)"
            )
            raise located_error(msg, at=("quorum", key), at_key=True)


_KINDS = frozenset(kind.value for kind in ActKind)


def _taken_alone(autonomy: Autonomy, key: str) -> bool:
    if key not in _KINDS:
        return autonomy.level_for(ActKind.ACTION, key) is AutonomyLevel.AUTO
    if key == ActKind.ACTION and isinstance(autonomy.action, dict):
        return False  # tools not listed there need approval
    return autonomy.level_for(ActKind(key)) is AutonomyLevel.AUTO
