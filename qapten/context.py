"""What every step of a run needs, handed to LangGraph nodes as the runtime context."""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.runnables import Runnable

from qapten.acts import ActSpec
from qapten.foreground import Foreground
from qapten.orgchart import OrgChart
from qapten.proposals import Proposal
from qapten.store import Store
from qapten.workspace import Workspace


@dataclass(frozen=True)
class SwarmContext:
    chart: OrgChart
    store: Store
    menus: Mapping[str, tuple[ActSpec, ...]]
    """Each role's acts, built once per swarm."""
    models: Mapping[str, Runnable[Any, AIMessage]]
    """Each role's model with its acts bound as tools (forced choice), built once per swarm."""
    workspaces: Path
    max_output_retries: int = 2
    """How many times an unusable model answer is retried, with the error shown to the model."""
    born_decided: BornDecided = field(default_factory=lambda: BornDecided())
    """Proposals approved as they were made (autonomy auto), from `think` to `act`."""
    foreground: Foreground = field(default_factory=Foreground)
    """The requests this process is answering; each step waits for its turn behind them."""

    def workspace(self, run_id: str) -> Workspace:
        return Workspace(self.workspaces / run_id)

    def reports(self, role: str) -> tuple[str, ...]:
        return tuple(r.name for r in self.chart.reports(role))


class BornDecided:
    """Proposals that were approved as they were made, kept from the step that made them to the
    step that carries them out, which then needs no read: nothing can change such a proposal
    (a decision, a cancel or a deadline only touches pending ones). Bounded: an entry whose act
    never comes (a cancelled run) is forgotten after `limit` newer ones."""

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._proposals: OrderedDict[str, Proposal] = OrderedDict()

    def keep(self, proposal: Proposal) -> None:
        self._proposals[proposal.id] = proposal
        if len(self._proposals) > self._limit:
            self._proposals.popitem(last=False)

    def take(self, proposal_id: str) -> Proposal | None:
        return self._proposals.pop(proposal_id, None)


def new_id(prefix: str) -> str:
    """Short, random, URL-safe ids: ``r_3kfp9c2m1q`` (runs), ``p_…`` (proposals)."""
    return f"{prefix}_{secrets.token_hex(6)}"
