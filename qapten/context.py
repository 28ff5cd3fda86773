"""What every step of a run needs, handed to LangGraph nodes as the runtime context."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.runnables import Runnable

from qapten.acts import ActSpec
from qapten.orgchart import OrgChart
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

    def workspace(self, run_id: str) -> Workspace:
        return Workspace(self.workspaces / run_id)

    def reports(self, role: str) -> tuple[str, ...]:
        return tuple(r.name for r in self.chart.reports(role))


def new_id(prefix: str) -> str:
    """Short, random, URL-safe ids: ``r_3kfp9c2m1q`` (runs), ``p_…`` (proposals)."""
    return f"{prefix}_{secrets.token_hex(6)}"
