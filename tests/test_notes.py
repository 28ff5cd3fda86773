"""What a task has learnt lives in the store, once per step, not on the checkpointed board."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from qapten import Answer, OrgChart, Reject, Swarm
from qapten.store import Store
from qapten.store.notes import Note, report_key, step_key
from qapten.testing import ScriptedChatModel, ask, delegate, deliver, use

from .conftest import ORG


def _path(db: str) -> str:
    return db.removeprefix("sqlite:///")


def _lose_every_checkpoint(db: str, run_id: str) -> None:
    """As if the process died before its first checkpoint: the run is replayed from scratch."""
    with closing(sqlite3.connect(_path(db))) as conn, conn:
        conn.execute("DELETE FROM checkpoints WHERE thread_id = ?", (run_id,))
        conn.execute("DELETE FROM writes WHERE thread_id = ?", (run_id,))
        conn.execute("UPDATE qapten_runs SET status = 'running' WHERE id = ?", (run_id,))


def _notes(tasks: list[Any]) -> dict[str, list[str]]:
    return {task["id"]: task["notes"] for task in tasks}


@pytest.mark.sqlite_only  # it deletes LangGraph's SQLite checkpoints by hand
async def test_a_replayed_run_adds_no_note_twice(db: str) -> None:
    model = ScriptedChatModel(
        {
            "ceo": [delegate(marketcom="Write the launch post"), deliver("launched")],
            "marketcom": [
                use("workspace.write_file", path="post.md", content="We launch!"),  # auto
                deliver("post.md is written"),
            ],
        }
    )
    first = Swarm.from_yaml(ORG, model=model, db=db)
    try:
        run = await first.start("Launch")
        [plan] = await first.pending(run.id)
        await first.decide(plan.id, "approve")
        [post] = await first.pending(run.id)
        await first.decide(post.id, "approve")
        [final] = await first.pending(run.id)
        learnt = _notes(await first.tasks(run.id))
    finally:
        await first.close()
    assert learnt == {
        "t1": [
            "You delegated to marketcom (t1.1).",
            "Result from marketcom (t1.1): post.md is written",
        ],
        "t1.1": ["You called workspace.write_file: done: wrote 10 characters to post.md"],
    }
    _lose_every_checkpoint(db, run.id)

    # Every step runs again: acts and reports find their notes' keys taken, and add nothing.
    second = Swarm.from_yaml(ORG, model=ScriptedChatModel({}), db=db)  # no model call allowed
    try:
        assert await second.resume_all() == [run.id]
        assert [p.id for p in await second.pending(run.id)] == [final.id]
        assert _notes(await second.tasks(run.id)) == learnt
        assert [c.status for c in await second.tool_calls(run.id)] == ["done"]
        await second.decide(final.id, "approve")
        assert (await second.wait(run.id, timeout=10)).result == "launched"
    finally:
        await second.close()


async def test_notes_survive_a_restart_and_reach_the_next_prompt(db: str) -> None:
    first = Swarm.from_yaml(
        ORG,
        model=ScriptedChatModel({"ceo": [delegate(cto="Do something"), ask("Which market?")]}),
        db=db,
    )
    try:
        run = await first.start("Grow")
        [plan] = await first.pending(run.id)
        await first.decide(plan.id, Reject(feedback="too vague"))
        [question] = await first.pending(run.id)
    finally:
        await first.close()

    model = ScriptedChatModel({"ceo": [deliver("Europe first")]})
    second = Swarm.from_yaml(ORG, model=model, db=db)
    try:
        [root] = await second.tasks(run.id)
        assert len(root["notes"]) == 1 and "too vague" in root["notes"][0]
        await second.decide(question.id, Answer(text="Europe"))
        [final] = await second.pending(run.id)
        prompt = model.calls_for("ceo")[0].prompt
        assert "1. The human rejected your proposal" in prompt and "too vague" in prompt
        assert "2. You asked: 'Which market?'. The human answered: Europe" in prompt
        await second.decide(final.id, "approve")
        assert (await second.wait(run.id, timeout=10)).result == "Europe first"
        [root] = await second.tasks(run.id)
        assert len(root["notes"]) == 2
    finally:
        await second.close()


def stamp(text: str) -> str:
    """Stamp a text."""
    return f"stamped {text}"


def _one_role(folder: Path, calls: int) -> OrgChart:
    (folder / "lead.md").write_text("You stamp texts.\n", encoding="utf-8")
    data: dict[str, Any] = {
        "name": "Stamps",
        "max_steps": calls + 5,
        "roles": {
            "lead": {
                "title": "Lead",
                "reports_to": None,
                "tools": ["stamp"],
                "max_steps": calls + 5,
                "autonomy": {"action": "auto", "deliverable": "auto"},
            }
        },
    }
    return OrgChart.from_dict(data, base_dir=folder, extra_tools=["stamp"])


async def _checkpoint_blobs(folder: Path, calls: int) -> list[bytes]:
    """Every blob LangGraph wrote for a run of `calls` tool calls by one role."""
    db = f"sqlite:///{folder / 'qapten.db'}"
    script = [*(use("stamp", text=f"page {i}") for i in range(calls)), deliver("all stamped")]
    swarm = Swarm(
        _one_role(folder, calls),
        model=ScriptedChatModel({"lead": script}),
        db=db,
        tools=[stamp],
    )
    try:
        run = await swarm.start("Stamp every page")
        assert (await swarm.wait(run.id, timeout=30)).result == "all stamped"
        [lead] = await swarm.tasks(run.id)
        assert len(lead["notes"]) == calls
    finally:
        await swarm.close()
    with closing(sqlite3.connect(_path(db))) as conn:
        checkpoints = conn.execute(
            "SELECT checkpoint, metadata FROM checkpoints WHERE thread_id = ?", (run.id,)
        ).fetchall()
        writes = conn.execute("SELECT value FROM writes WHERE thread_id = ?", (run.id,))
        return [bytes(a) + bytes(b) for a, b in checkpoints] + [bytes(v) for (v,) in writes]


async def test_a_checkpoint_costs_the_same_at_step_forty_as_at_step_ten(tmp_path: Path) -> None:
    (tmp_path / "short").mkdir()
    (tmp_path / "long").mkdir()
    short = await _checkpoint_blobs(tmp_path / "short", 10)
    long = await _checkpoint_blobs(tmp_path / "long", 40)

    # No note is ever written into a checkpoint: the board keeps none.
    assert not [blob for blob in short + long if b"You called" in blob]
    # So the largest checkpoint does not grow with the task (a few digits more, at most).
    assert max(map(len, long)) <= max(map(len, short)) + 64


async def test_a_note_is_kept_once_per_key_in_the_order_first_written(db: str) -> None:
    store = await Store.open(db)
    try:
        await store.add_notes("r_1", [Note("t1", step_key(1), "You delegated to cto (t1.1).")])
        failed = "Task t1.1 for cto failed: model down"
        reports = [Note("t1", report_key("t1.1"), failed), Note("t1", report_key("t1.2"), "ok")]
        await store.add_notes("r_1", reports)
        await store.add_notes("r_1", [*reports, Note("t1", step_key(1), "replayed")])  # a replay
        assert await store.run_notes("r_1") == {
            "t1": ["You delegated to cto (t1.1).", failed, "ok"]
        }

        # A retry takes the failure report back; the retried child's report comes last.
        await store.forget_notes("r_1", {"t1": [failed]})
        await store.add_notes("r_1", [Note("t1", report_key("t1.1"), "Result from cto: done")])
        assert await store.run_notes("r_1") == {
            "t1": ["You delegated to cto (t1.1).", "ok", "Result from cto: done"]
        }
        assert await store.run_notes("r_2") == {}
    finally:
        await store.close()
