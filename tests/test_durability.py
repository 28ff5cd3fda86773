"""Restart in a new process, and SIGKILL inside an approved tool call."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from qapten import ProposalStatus, Swarm
from qapten.storage import engine_url
from qapten.testing import ScriptedChatModel, delegate, deliver

from .conftest import ORG, ROOT, write_org


def give_cto_append(data: dict[str, Any]) -> None:
    data["roles"]["cto"]["tools"] = ["append_line"]
    data["roles"]["cto"]["autonomy"] = {"action": "approve", "deliverable": "auto"}


def drive(
    phase: str, org: Path, db: str, effects: Path, *extra: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "tests.process_driver", phase, str(org), db, str(effects), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_restart_in_a_new_process_finishes_the_run(tmp_path: Path, db: str) -> None:
    org = write_org(tmp_path / "org", give_cto_append)
    effects = tmp_path / "effects.txt"
    first = drive("start", org, db, effects)
    assert first["pending"] == [["cto", "action"], ["support", "question"]]
    assert first["model_calls"] == first["proposals_total"] == 3

    second = drive("finish", org, db, effects, first["run_id"])
    # The new process lists the same pending proposals and never re-asks the model for them:
    # its script has exactly one answer per proposal still to come (more calls would raise).
    assert second["pending_at_open"] == [["cto", "action"], ["support", "question"]]
    assert second["status"] == "done"
    assert second["result"] == "final synthesis"
    assert second["model_calls"] == 3
    assert second["proposals_total"] == first["proposals_total"] + second["model_calls"]
    assert effects.read_text() == "decision recorded\n"
    assert second["journal"] == [["append_line", "done"]]


@pytest.mark.slow
def test_sigkill_inside_a_tool_applies_the_effect_once(tmp_path: Path, db: str) -> None:
    org = write_org(tmp_path / "org", give_cto_append)
    effects = tmp_path / "effects.txt"
    inside = Path(str(effects) + ".inside")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.process_driver", "crash", str(org), db, str(effects)],
        cwd=ROOT,
        env={**os.environ, "QAPTEN_TEST_HANG_IN_TOOL": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The crash phase approves the plan, then the CTO's action; the tool hangs after its effect.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not inside.exists():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=10)
    assert inside.exists(), stderr
    run_id = _only_run_id(db)

    recovered = drive("recover", org, db, effects, run_id)
    assert recovered["status"] == "done"
    assert effects.read_text() == "decision recorded\n"  # applied once, not again on resume
    assert recovered["journal"] == [["append_line", "interrupted"]]


def _only_run_id(db: str) -> str:
    engine = create_engine(engine_url(db))
    try:
        with engine.connect() as conn:
            [(run_id,)] = conn.execute(text("select id from qapten_runs")).fetchall()
    finally:
        engine.dispose()
    return str(run_id)


async def test_resume_all_picks_up_a_decision_its_recorder_never_acted_on(db: str) -> None:
    first = Swarm.from_yaml(
        ORG, model=ScriptedChatModel({"ceo": [delegate(support="Hours")]}), db=db
    )
    run = await first.start("Set support hours")
    [plan] = await first.pending(run.id)
    assert (await first.run(run.id)).status == "waiting"
    # Recorded, then the process "dies" before advancing the run (no kick).
    await first.store.decide(
        plan.id,
        status=ProposalStatus.APPROVED,
        decided_by="alice",
        decided_payload=plan.payload,
        approved_hash=plan.payload_hash,
    )
    assert (await first.run(run.id)).status == "running"
    await first.close()

    second = Swarm.from_yaml(
        ORG,
        model=ScriptedChatModel({"support": [deliver("9-17")], "ceo": [deliver("done")]}),
        db=db,
    )
    try:
        assert await second.resume_all() == [run.id]
        [final] = await second.pending(run.id)
        assert (final.role, final.kind) == ("ceo", "deliverable")
    finally:
        await second.close()
