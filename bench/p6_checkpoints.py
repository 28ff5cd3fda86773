"""P6: checkpoint bytes written per step over a long task (one role, ~200 tool calls)."""

from __future__ import annotations

import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.common import qapten_swarm, ratio, solo_chart, solo_model
from bench.report import Row
from bench.sizes import Sizes

TARGET = 2.2
"""total(N) / total(N/2): 2 when each step costs the same, 4 when a step costs its history."""
STEP_TARGET = 1.25
"""Largest checkpoint of the run of N calls / that of the run of N/2: 1 when a checkpoint costs
the same whatever the task's history, 2 when it holds the history."""
MISSION = "Keep a note of every finding of the audit, then report."
MODES = {
    "auto": "auto tool",
    "approve": "each call approved",
}
"""The tool's autonomy level. Auto is the issue's run. Approved calls add a run whose every
call is one advance of the run, ended by a checkpoint: it shows a step's cost even when the
engine checkpoints only when an advance ends (LangGraph's ``durability="exit"``)."""


@dataclass(frozen=True)
class CheckpointBytes:
    per_step: list[int]
    """Bytes of each checkpoint of the run, oldest first: the checkpoint and metadata blobs plus
    the blobs of the writes made from it (node outputs and `Send` packets)."""
    notes: int
    """Bytes of note text in Qapten's own notes table, when the engine keeps them there."""

    @property
    def total(self) -> int:
        return sum(self.per_step)


async def measure(sizes: Sizes) -> list[Row]:
    rows = []
    for action, label in MODES.items():
        calls = sizes.long_run_steps
        # Two runs, N and N/2 calls, rather than the two halves of one: the figures hold
        # however often the engine checkpoints.
        full, half = await long_run(calls, action), await long_run(calls // 2, action)
        rows.append(growth_row(label, calls, full, half))
    return rows


def growth_row(label: str, calls: int, full: CheckpointBytes, half: CheckpointBytes) -> Row:
    steps = full.per_step
    growth = ratio(full.total, half.total)
    step_growth = ratio(max(steps), max(half.per_step))
    numbers = {
        "tool_calls": calls,
        "checkpoints": len(steps),
        "first_step_bytes": steps[0],
        "last_step_bytes": steps[-1],
        "largest_step_bytes": max(steps),
        "total_bytes": full.total,
        "half_run_total_bytes": half.total,
        "half_run_largest_step_bytes": max(half.per_step),
        "growth_ratio": growth,
        "largest_step_ratio": step_growth,
        "notes_table_bytes": full.notes,
    }
    figure = (
        f"total(N)/total(N/2) = {growth:.2f}, largest step {step_growth:.2f}x; "
        f"{full.total / 1024:,.0f} KiB in {len(steps)} checkpoints "
        f"(first {steps[0]:,} B, last {steps[-1]:,} B, largest {max(steps):,} B)"
    )
    return Row(
        "P6",
        f"checkpoint bytes per step, {calls}-call task, {label}",
        figure,
        f"linear: total ratio <= {TARGET} (2 linear, 4 quadratic), largest step <= {STEP_TARGET}x",
        growth <= TARGET and step_growth <= STEP_TARGET,
        numbers,
    )


async def long_run(calls: int, action: str) -> CheckpointBytes:
    """What LangGraph wrote for one run of `calls` tool calls (autonomy `action`, each approved
    as soon as it is proposed), then a deliverable."""
    with tempfile.TemporaryDirectory(prefix="qapten-bench-") as tmp:
        folder = Path(tmp)
        org = solo_chart(calls=calls, action=action)
        async with qapten_swarm(folder, org=org, scripted=solo_model(calls)) as swarm:
            run = await swarm.start(MISSION)
            while pending := await swarm.pending(run.id):
                for proposal in pending:
                    await swarm.decide(proposal.id, "approve", by="bench")
            done = await swarm.wait(run.id)
        if done.result is None:
            msg = f"the long run ended {done.status} without its deliverable"
            raise RuntimeError(msg)
        return checkpoint_bytes(folder / "qapten.db", run.id)


def checkpoint_bytes(db: Path, run_id: str) -> CheckpointBytes:
    """What LangGraph's SQLite saver wrote for the run (a run is a LangGraph thread)."""
    with sqlite3.connect(db) as conn:
        checkpoints = conn.execute(
            "SELECT checkpoint_id, length(checkpoint) + length(metadata) FROM checkpoints "
            "WHERE thread_id = ? ORDER BY checkpoint_id",
            (run_id,),
        ).fetchall()
        writes = dict(
            conn.execute(
                "SELECT checkpoint_id, sum(length(value)) FROM writes "
                "WHERE thread_id = ? GROUP BY checkpoint_id",
                (run_id,),
            ).fetchall()
        )
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        notes = 0
        if "qapten_notes" in tables:
            (notes,) = conn.execute(
                "SELECT coalesce(sum(length(text)), 0) FROM qapten_notes WHERE run_id = ?",
                (run_id,),
            ).fetchone()
    per_step = [size + int(writes.get(checkpoint_id, 0)) for checkpoint_id, size in checkpoints]
    return CheckpointBytes(per_step=per_step, notes=int(notes))
