"""`qapten run`: orchestrating from the terminal, driven through a pseudo-terminal (pexpect), a
pipe, and in-process for what only a second decider can do (a decision from elsewhere)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pexpect
import pytest
from rich.console import Console
from typer.testing import CliRunner

from qapten import Swarm
from qapten.cli import app
from qapten.proposals import AUTO_DECIDER
from qapten.terminal import Paused, orchestrate
from qapten.terminal_io import LineReader
from qapten.testing import ScriptedChatModel, ask, delegate, deliver, use

from .conftest import ORG, write_org

WAIT = 30  # seconds: every wait for the child process is bounded
ACT_PROMPT = r"\[s\]kip > "
ANSWER_MENU = "[a]nswer / [r]eject / [s]kip > "
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")

# Before the pause: the CEO's plan and the CTO's tool call. After: one answer per model call
# still to come (a new process replays its script from the start; more calls would fail).
BEFORE_PAUSE = {
    "ceo": [delegate(cto="Write the plan")],
    "cto": [use("workspace.write_file", path="plan.md", content="v1")],
}
AFTER_PAUSE = {"ceo": [deliver("Final: plan.md is written")], "cto": [deliver("plan.md")]}
WHOLE_RUN = {role: BEFORE_PAUSE[role] + AFTER_PAUSE[role] for role in BEFORE_PAUSE}


def plain(text: str) -> str:
    """What a person reads: the output without terminal control sequences."""
    return ANSI.sub("", text).replace("\r", "")


def scripted(tmp_path: Path, name: str, script: dict[str, list[Any]]) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(script), encoding="utf-8")
    return f"scripted:{path}"


def clean_env() -> dict[str, str]:
    """This environment without the developer's own QAPTEN_ settings, and a known terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QAPTEN_")}
    return {**env, "TERM": "xterm-256color", "COLUMNS": "", "LINES": ""}


@contextmanager
def qapten_pty(tmp_path: Path, *args: str) -> Iterator[tuple[pexpect.spawn, io.StringIO]]:
    """`qapten ARGS` in a pseudo-terminal, with everything it printed; killed if still alive."""
    log = io.StringIO()
    child = pexpect.spawn(
        sys.executable,
        ["-m", "qapten.cli", *args],
        cwd=tmp_path,
        env=clean_env(),
        encoding="utf-8",
        dimensions=(50, 200),
        timeout=WAIT,
    )
    child.logfile_read = log
    try:
        yield child, log
    finally:
        if child.isalive():
            child.terminate(force=True)


def finish(child: pexpect.spawn) -> int:
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus is not None, f"killed by signal {child.signalstatus}"
    return child.exitstatus


def shown_proposal(child: pexpect.spawn) -> tuple[str, str]:
    """Wait for the next decision menu; the id of the proposal shown, and all text before it."""
    child.expect(ACT_PROMPT)
    before = plain(child.before)
    ids = re.findall(r"proposal (p_\w+) · ", before)
    assert ids, before
    return ids[-1], before


def db_rows(tmp_path: Path, query: str, *params: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / ".qapten" / "qapten.db") as conn:
        return conn.execute(query, params).fetchall()


PENDING_IDS = "SELECT id FROM qapten_proposals WHERE status = 'pending'"


def run_status(tmp_path: Path, run_id: str) -> str:
    [(status,)] = db_rows(tmp_path, "SELECT status FROM qapten_runs WHERE id = ?", run_id)
    return str(status)


def workspace_file(tmp_path: Path, run_id: str, name: str) -> str:
    return (tmp_path / ".qapten" / "workspaces" / run_id / name).read_text(encoding="utf-8")


@pytest.mark.slow
def test_each_proposal_is_shown_in_full_and_approved_by_typing_a(tmp_path: Path) -> None:
    model = scripted(tmp_path, "script", WHOLE_RUN)
    with qapten_pty(tmp_path, "run", str(ORG), "--mission", "Launch", "--model", model) as (
        child,
        log,
    ):
        child.expect(r"run (r_\w+) started: Launch")
        run_id = child.match.group(1)
        _, plan = shown_proposal(child)
        assert "plan proposal" in plan and "→ cto: Write the plan" in plan
        child.sendline("a")
        _, action = shown_proposal(child)
        # The tool call with its exact arguments, and the task it serves.
        assert "task t1.1: Write the plan" in action and "act: workspace.write_file" in action
        assert '"path": "plan.md"' in action and '"content": "v1"' in action
        child.sendline("a")
        _, deliverable = shown_proposal(child)
        assert "deliverable proposal" in deliverable
        assert "Final: plan.md is written" in deliverable
        child.sendline("a")
        assert finish(child) == 0
    output = plain(log.getvalue())
    assert "Traceback" not in output
    assert "deliverable" in output.split("approved")[-1]  # printed after the last approval
    assert output.rstrip().splitlines()[-2].strip("│ ") == "Final: plan.md is written"
    assert db_rows(tmp_path, "SELECT status, result FROM qapten_runs") == [
        ("done", "Final: plan.md is written")
    ]
    assert workspace_file(tmp_path, run_id, "plan.md") == "v1"


@pytest.mark.slow
def test_ctrl_c_pauses_the_run_and_resume_finishes_it(tmp_path: Path) -> None:
    first = scripted(tmp_path, "before", BEFORE_PAUSE)
    with qapten_pty(tmp_path, "run", str(ORG), "--mission", "Launch", "--model", first) as (
        child,
        _,
    ):
        shown_proposal(child)
        child.sendline("a")  # the plan
        waiting, action = shown_proposal(child)
        assert "workspace.write_file" in action
        child.sendintr()  # Ctrl-C at the prompt
        child.expect(r"paused \(interrupted\): resume with qapten run \S+ --resume (r_\w+)")
        run_id = child.match.group(1)
        assert finish(child) == 130
    # Nothing half-decided: the run waits in the database with the action still pending.
    assert run_status(tmp_path, run_id) == "waiting"
    assert db_rows(tmp_path, PENDING_IDS) == [(waiting,)]

    second = scripted(tmp_path, "after", AFTER_PAUSE)
    with qapten_pty(tmp_path, "run", str(ORG), "--resume", run_id, "--model", second) as (
        child,
        log,
    ):
        child.expect(f"run {run_id} resumed: Launch")
        shown, _ = shown_proposal(child)
        assert shown == waiting  # the same proposal, not a new model call
        child.sendline("a")
        _, deliverable = shown_proposal(child)
        assert "Final: plan.md is written" in deliverable
        child.sendline("a")
        assert finish(child) == 0
    assert "Traceback" not in plain(log.getvalue())
    assert run_status(tmp_path, run_id) == "done"
    assert workspace_file(tmp_path, run_id, "plan.md") == "v1"


@pytest.mark.slow
def test_auto_approve_asks_only_for_human_level_acts_and_questions(tmp_path: Path) -> None:
    def cto_writes_only_with_a_human(data: dict[str, Any]) -> None:
        data["roles"]["cto"]["autonomy"] = {"action": "human", "deliverable": "auto"}

    org = write_org(tmp_path / "org", cto_writes_only_with_a_human)
    model = scripted(
        tmp_path,
        "script",
        {
            "ceo": [delegate(cto="Write the plan", support="Set the hours"), deliver("All set")],
            "cto": [use("workspace.write_file", path="plan.md", content="v1"), deliver("ok")],
            "support": [ask("Which hours?"), deliver("hours set")],
        },
    )
    args = ["run", str(org), "--mission", "Launch", "--model", model, "--auto-approve"]
    with qapten_pty(tmp_path, *args) as (child, log):
        asked = []
        # The CTO's tool call (human level) and the question come in either order.
        while (seen := child.expect_exact(["[e]dit / [s]kip > ", ANSWER_MENU, pexpect.EOF])) < 2:
            if seen == 0:
                asked.append("action")
                child.sendline("a")
            else:
                asked.append("question")
                child.sendline("a")
                child.expect_exact("your answer (empty: back) > ")
                child.sendline("9 to 17")
        child.close()
        assert child.exitstatus == 0
    output = plain(log.getvalue())
    assert sorted(asked) == ["action", "question"]
    assert "autopilot: approved ceo's plan" in output
    assert "autopilot: approved ceo's deliverable" in output
    query = "SELECT role, kind, decided_by, feedback FROM qapten_proposals WHERE decided_by != ?"
    decided = db_rows(tmp_path, query, AUTO_DECIDER)  # auto-level acts are the policy's own
    assert sorted(decided) == [
        ("ceo", "deliverable", "autopilot", None),
        ("ceo", "plan", "autopilot", None),
        ("cto", "action", "terminal", None),
        ("support", "question", "terminal", "9 to 17"),
    ]


@pytest.mark.slow
def test_a_pipe_gets_plain_lines_and_end_of_input_pauses(tmp_path: Path) -> None:
    def qapten(stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "qapten.cli", "run", str(ORG), *args],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=clean_env(),
            timeout=WAIT,
            check=False,
        )

    first = qapten("a\n", "--mission", "Launch", "--model", scripted(tmp_path, "a", BEFORE_PAUSE))
    assert first.returncode == 130, first.stderr
    assert "\x1b[" not in first.stdout  # no colours, no cursor moves
    found = re.search(r"paused \(end of input\): resume with .* --resume (r_\w+)", first.stdout)
    assert found, first.stdout
    # Editing: a payload that misses a field is refused with the reason, then asked again.
    edits = 'e\n{"path": "plan.md"}\n{"path": "plan.md", "content": "v2"}\na\n'
    after = scripted(tmp_path, "b", AFTER_PAUSE)
    second = qapten(edits, "--resume", found.group(1), "--model", after)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "not accepted: invalid arguments for workspace.write_file: content" in second.stdout
    assert "edited" in second.stdout
    assert workspace_file(tmp_path, found.group(1), "plan.md") == "v2"


def test_resume_mistakes_are_one_line_and_exit_2(tmp_path: Path) -> None:
    def cli(*args: str) -> tuple[int, str]:
        unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("QAPTEN_")}
        data = ["--data-dir", str(tmp_path / "data")]
        result = CliRunner().invoke(app, ["run", str(ORG), *data, *args], env=unset)
        assert result.exc_info is None or result.exc_info[0] is SystemExit, result.exc_info
        assert "Traceback" not in result.output
        return result.exit_code, result.output

    model = ["--model", scripted(tmp_path, "s", WHOLE_RUN)]
    code, output = cli("--resume", "r_nope", *model)
    assert code == 2
    assert "error: no run with id 'r_nope'" in output
    assert "--data-dir or --db" in output
    for args in ([], ["--mission", "x", "--resume", "r_1"]):
        code, output = cli(*args, *model)
        assert (code, output.count("\n")) == (2, 1)
        assert "error: give --mission TEXT for a new run or --resume RUN_ID" in output
    code, output = cli("--mission", "  ", *model)
    assert (code, output) == (2, "error: --mission is empty: say what the company should achieve\n")


# -- in-process: what the terminal does when someone else decides ----------------------------


async def wait_for_text(out: io.StringIO, text: str) -> None:
    async with asyncio.timeout(10):
        while text not in out.getvalue():  # noqa: ASYNC110 — the output is the only signal
            await asyncio.sleep(0.02)


async def test_a_decision_made_elsewhere_ends_the_prompt(db: str) -> None:
    model = ScriptedChatModel({"ceo": [deliver("Done.")]})
    out = io.StringIO()
    read_end, write_end = os.pipe()
    async with Swarm.from_yaml(ORG, model=model, db=db) as swarm:
        run = await swarm.start("Launch")
        console = Console(file=out, width=100)
        session = asyncio.create_task(
            orchestrate(swarm, run.id, console=console, reader=LineReader(read_end))
        )
        await wait_for_text(out, "[s]kip > ")
        [proposal] = await swarm.pending(run.id)
        await swarm.decide(proposal.id, "approve", by="alice")  # e.g. from the web inbox
        ended = await asyncio.wait_for(session, 10)
    os.close(read_end)
    os.close(write_end)
    assert ended.status == "done"
    assert "already approved by alice" in out.getvalue()


async def test_unknown_input_is_explained_and_end_of_input_leaves_it_pending(db: str) -> None:
    model = ScriptedChatModel({"ceo": [ask("Which market first?")]})
    out = io.StringIO()
    read_end, write_end = os.pipe()
    os.write(write_end, b"approve\n")  # not a choice for a question
    os.close(write_end)
    async with Swarm.from_yaml(ORG, model=model, db=db) as swarm:
        run = await swarm.start("Launch")
        with pytest.raises(Paused) as paused:
            await orchestrate(
                swarm, run.id, console=Console(file=out, width=100), reader=LineReader(read_end)
            )
        [still] = await swarm.pending(run.id)
    os.close(read_end)
    assert paused.value.reason == "end of input"
    assert "Which market first?" in out.getvalue()
    assert "choose one of: [a]nswer / [r]eject / [s]kip" in out.getvalue()
    assert still.kind == "question"


async def test_skip_comes_back_and_revise_takes_feedback(db: str) -> None:
    model = ScriptedChatModel({"ceo": [deliver("draft 1"), deliver("draft 2")]})
    out = io.StringIO()
    read_end, write_end = os.pipe()
    # Skip (nothing else to decide: it comes back), revise with no feedback (back to the menu),
    # revise with feedback, then approve the new draft.
    os.write(write_end, b"s\nv\n\nrevise\nshorter please\na\n")
    async with Swarm.from_yaml(ORG, model=model, db=db) as swarm:
        run = await swarm.start("Launch")
        console = Console(file=out, width=100)
        ended = await orchestrate(swarm, run.id, console=console, reader=LineReader(read_end))
    os.close(read_end)
    os.close(write_end)
    text = out.getvalue()
    assert (ended.status, ended.result) == ("done", "draft 2")
    assert text.count("│ draft 1") == 2  # shown again after the skip
    assert "skipped p_" in text and "revision requested" in text
    assert "shorter please" in model.calls_for("ceo")[1].prompt
