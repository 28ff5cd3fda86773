"""Crash anywhere (kill -9), measured; and regression tests for what the harness found.

The slow test runs `crash_harness` (see its docstring) with at least 100 kill points and prints
the figures. ``QAPTEN_CRASH_SEED`` replays a kill plan (timings still vary from run to run).
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from qapten import ProposalStatus, Swarm
from qapten.driver import run_config
from qapten.testing import ScriptedChatModel, delegate

from ..conftest import ORG
from .crash_harness import POINTS, Harness, run_harness

KILLS = 100


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_at_a_hundred_points_loses_nothing(tmp_path: Path) -> None:
    seed = os.environ.get("QAPTEN_CRASH_SEED")
    figures = run_harness(tmp_path, kills=KILLS, seed=int(seed) if seed else None)
    print(f"\n{figures.summary()}\n{figures.details()}")

    assert figures.problems == []
    assert sum(figures.kills.values()) >= KILLS
    assert all(figures.kills[kind] >= KILLS // 10 for kind in (*POINTS, "random")), figures.kills
    assert figures.runs_done == figures.runs_started > 0
    assert figures.runs_lost == figures.proposals_lost == figures.decisions_lost == 0
    assert figures.double_effects == 0
    assert figures.integrity == "ok"
    # Each kill inside the tool left a call journaled `interrupted`, reported and not re-run.
    assert figures.interrupted >= figures.kills["tool"]
    # Runs that were executing when the process died moved on by themselves after restart.
    assert figures.resumed > 0
    assert figures.model_reasked == 0


@pytest.mark.sqlite_only  # the harness serves SQLite only
def test_a_server_killed_as_it_starts_leaves_a_database_the_next_one_opens(
    tmp_path: Path,
) -> None:
    # A kill within the first life's first milliseconds lands before the schema's transaction
    # commits: the database has no tables yet, and that lost nothing (CI once saw the harness
    # trip over it). The second life starts missions and dies too; the last one finishes them.
    figures = Harness(tmp_path, seed=0).run(kills=2, plan=["random:0.0", "random:2.0"])

    assert figures.problems == []
    assert figures.kills["random"] == 2
    assert figures.checked == 2
    assert figures.runs_done == figures.runs_started > 0
    assert figures.runs_lost == figures.proposals_lost == figures.decisions_lost == 0
    assert figures.integrity == "ok"


def _checkpoints_after_the_first_lost(db: str, run_id: str) -> None:
    """What a SIGKILL can leave: the run's input checkpoint and its first task's saved writes,
    none of the checkpoints after (LangGraph writes them in the background)."""
    with closing(sqlite3.connect(db.removeprefix("sqlite:///"))) as conn, conn:
        where = "thread_id = ? AND checkpoint_id > ?"
        [(first,)] = conn.execute(
            "SELECT min(checkpoint_id) FROM checkpoints WHERE thread_id = ?", (run_id,)
        )
        conn.execute(f"DELETE FROM checkpoints WHERE {where}", (run_id, first))
        conn.execute(f"DELETE FROM writes WHERE {where}", (run_id, first))
        conn.execute("UPDATE qapten_runs SET status = 'running' WHERE id = ?", (run_id,))


@pytest.mark.sqlite_only  # it cuts LangGraph's SQLite checkpoint tables by hand
async def test_a_run_cut_off_before_its_first_checkpoint_resumes_with_its_board(db: str) -> None:
    first = Swarm.from_yaml(ORG, model=ScriptedChatModel({"ceo": [delegate(cto="Pick")]}), db=db)
    run = await first.start("Pick a cloud")
    [plan] = await first.pending(run.id)
    await first.close()
    _checkpoints_after_the_first_lost(db, run.id)

    # Once taken for a finished graph, the run got new input that threw its board away.
    second = Swarm.from_yaml(ORG, model=ScriptedChatModel({}), db=db)  # no model call allowed
    try:
        assert await second.resume_all() == [run.id]
        assert [p.id for p in await second.pending(run.id)] == [plan.id]
        assert (await second.run(run.id)).status == "waiting"
        [root] = await second.tasks(run.id)
        assert (root["role"], root["status"], root["steps"]) == ("ceo", "waiting", 1)
    finally:
        await second.close()


async def test_a_decision_landing_as_the_run_parks_keeps_it_running(db: str) -> None:
    swarm = Swarm.from_yaml(ORG, model=ScriptedChatModel({"ceo": [delegate(cto="Pick")]}), db=db)
    try:
        run = await swarm.start("Pick a cloud")
        [plan] = await swarm.pending(run.id)
        store = swarm.store
        await store.set_run_status(run.id, "running")  # as while a step is being advanced
        _, graph, _ = await swarm._ready()
        # The board as `dispatch` left it, having read the plan as pending...
        board = (await graph.aget_state(run_config(run.id))).values
        await store.decide(  # ...and a decision lands before the run parks
            plan.id,
            status=ProposalStatus.APPROVED,
            decided_by="alice",
            decided_payload=plan.payload,
            approved_hash=plan.payload_hash,
        )
        again = await swarm._driver._settle(run.id, board)
        # Parked anyway, a crash right now would leave it asleep: restarts resume running runs.
        assert again
        assert (await swarm.run(run.id)).status == "running"
    finally:
        await swarm.close()
