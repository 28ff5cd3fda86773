"""What several benchmarks share: a Qapten swarm and a raw LangGraph graph on one mission, each
with its own SQLite file in a temporary folder, and the loop that decides every proposal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from bench.mission import ORG_DIR, chart, model, note
from bench.raw_graph import build_raw_graph
from qapten import OrgChart, Swarm
from qapten.testing import ScriptedChatModel, deliver, use


def qapten_swarm(
    folder: Path,
    *,
    autonomy: str = "approve",
    org: OrgChart | None = None,
    scripted: ScriptedChatModel | None = None,
    db: str | None = None,
) -> Swarm:
    """The bench swarm on `db` (by default a SQLite file in `folder`)."""
    return Swarm(
        org or chart(autonomy=autonomy),
        model=scripted or model(),
        db=db or f"sqlite:///{folder / 'qapten.db'}",
        workspaces=folder / "workspaces",
        tools=[note],
        sweep_interval=None,
    )


async def run_qapten_mission(swarm: Swarm, mission: str) -> str:
    """Start a mission and approve every proposal as soon as it comes, until the run is done."""
    run = await swarm.start(mission)
    while pending := await swarm.pending(run.id):
        for proposal in pending:
            await swarm.decide(proposal.id, "approve", by="bench")
    done = await swarm.wait(run.id)
    return done.result or ""


async def start_paused_runs(swarm: Swarm, count: int, *, concurrency: int = 32) -> list[str]:
    """Start `count` missions, each left waiting for the approval of the CEO's plan; returns the
    plan proposals' ids, oldest first. Real runs (checkpoints and all), so a decision resumes
    them; `concurrency` runs advance at once, enough to keep SQLite's one writer busy."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            run = await swarm.start(f"Launch the product, market {i}.")
            await swarm.idle(run.id)

    await asyncio.gather(*(one(i) for i in range(count)))
    plans = await swarm.pending()
    if len(plans) != count or await swarm.runs("running"):
        msg = f"expected {count} runs waiting on their plan, found {len(plans)} pending proposals"
        raise RuntimeError(msg)
    return [p.id for p in plans]


@asynccontextmanager
async def raw_graph(folder: Path, *, approvals: bool = True) -> AsyncIterator[Any]:
    """The raw graph with LangGraph's SQLite checkpointer for async graphs, AsyncSqliteSaver,
    on a file set up as Qapten sets its own (WAL, commits without fsync): the same tables,
    serialiser and disk work, so that only what the frameworks do differs."""
    async with aiosqlite.connect(folder / "raw.db", timeout=30) as connection:
        await connection.execute("PRAGMA journal_mode=WAL")
        await connection.execute("PRAGMA synchronous=NORMAL")
        checkpointer = AsyncSqliteSaver(connection)
        await checkpointer.setup()
        yield build_raw_graph(model(), checkpointer, approvals=approvals)


def solo_chart(*, calls: int, action: str) -> OrgChart:
    """One role (the CEO) whose long task is `calls` uses of `note`, then a deliverable.

    `action` is the autonomy level of the tool; plans and deliverables are auto, so that only
    the tool calls can wait for a human. Both step limits leave room for the whole task.
    """
    data: dict[str, Any] = {
        "name": "Bench Corp",
        "max_steps": calls + 10,
        "roles": {
            "ceo": {
                "title": "Chief Executive Officer",
                "reports_to": None,
                "tools": ["note"],
                "max_steps": calls + 10,
                "autonomy": {"plan": "auto", "action": action, "deliverable": "auto"},
            }
        },
    }
    return OrgChart.from_dict(data, base_dir=ORG_DIR, extra_tools=["note"])


def solo_model(calls: int) -> ScriptedChatModel:
    """The CEO's script for `solo_chart`: `calls` notes, then the deliverable (one run only)."""
    notes = [use("note", text=f"finding number {i} of the long task") for i in range(calls)]
    return ScriptedChatModel({"ceo": [*notes, deliver("The long task is done.")]})


def ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")
