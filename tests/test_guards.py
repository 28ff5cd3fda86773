"""What the engine refuses, whatever the model says: escapes, bad output, limits, wrong targets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from qapten import Revise, WorkspaceError
from qapten.testing import ScriptedChatModel, delegate, deliver, use
from qapten.workspace import Workspace

from .conftest import SwarmFactory, write_org


@pytest.mark.parametrize("path", ["../outside.txt", "/etc/passwd", "a/../../outside.txt", ""])
def test_workspace_refuses_paths_that_escape(tmp_path: Path, path: str) -> None:
    workspace = Workspace(tmp_path / "ws")
    with pytest.raises(WorkspaceError):
        workspace.write_text(path, "x")


def test_workspace_refuses_symlinks_that_point_out(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", tmp_path / "ws" / "link.txt")
    os.symlink(tmp_path, tmp_path / "ws" / "up")
    workspace = Workspace(tmp_path / "ws")
    with pytest.raises(WorkspaceError, match="escapes"):
        workspace.read_text("link.txt")
    with pytest.raises(WorkspaceError, match="escapes"):
        workspace.write_text("up/new.txt", "x")
    assert not (tmp_path / "new.txt").exists()


def cto_writes_alone(data: dict[str, Any]) -> None:
    data["roles"]["cto"]["autonomy"] = {"action": "auto", "deliverable": "auto"}
    data["roles"]["ceo"]["autonomy"] = {"plan": "auto", "deliverable": "auto"}


async def test_an_escape_attempt_is_refused_logged_and_told_to_the_role(
    make_swarm: SwarmFactory, tmp_path: Path
) -> None:
    model = ScriptedChatModel(
        {
            "ceo": [delegate(cto="Write notes"), deliver("ok")],
            "cto": [
                use("workspace.write_file", path="../../escape.txt", content="x"),
                deliver("could not write outside"),
            ],
        }
    )
    swarm = make_swarm(model, org=write_org(tmp_path / "org", cto_writes_alone))
    run = await swarm.start("Notes")
    await swarm.wait(run.id, timeout=10)
    [call] = await swarm.tool_calls(run.id)
    assert call.status == "refused" and "escapes the workspace" in (call.result or "")
    assert "tool.refused" in [e.type for e in await swarm.events(run.id)]
    assert "escapes the workspace" in model.calls_for("cto")[1].prompt
    assert not (tmp_path / "escape.txt").exists()


async def test_delegation_outside_reports_is_refused_and_retried(
    make_swarm: SwarmFactory, tmp_path: Path
) -> None:
    model = ScriptedChatModel(
        {
            "ceo": [delegate(ceo="do it yourself"), deliver("ok")],
        }
    )
    swarm = make_swarm(model, org=write_org(tmp_path / "org", cto_writes_alone))
    run = await swarm.start("Anything")
    done = await swarm.wait(run.id, timeout=10)
    assert done.result == "ok"
    retry_prompt = model.calls_for("ceo")[1].prompt
    assert "'ceo' is not one of your direct reports" in retry_prompt
    assert "cto, marketcom, support" in retry_prompt


async def test_unusable_output_is_retried_then_fails_the_task_keeping_the_raw_text(
    make_swarm: SwarmFactory,
) -> None:
    model = ScriptedChatModel({"ceo": ["I think we should", "hmm", use("deliver", text="x")]})
    swarm = make_swarm(model)
    run = await swarm.start("Anything")
    with pytest.raises(Exception, match="no usable answer in 3 tries"):
        await swarm.wait(run.id, timeout=10)
    invalid = [e for e in await swarm.events(run.id) if e.type == "model.invalid_output"]
    assert [e.data["raw"] for e in invalid][:2] == ["I think we should", "hmm"]
    assert "result: Field required" in invalid[2].data["error"]
    assert "you answered with text" in model.calls[1].prompt
    assert (await swarm.run(run.id)).status == "failed"


async def test_revision_limit_fails_the_task_with_a_clear_reason(
    make_swarm: SwarmFactory, tmp_path: Path
) -> None:
    def one_revision(data: dict[str, Any]) -> None:
        data["roles"]["ceo"]["max_revisions"] = 1

    model = ScriptedChatModel({"ceo": [deliver("a"), deliver("b")]})
    swarm = make_swarm(model, org=write_org(tmp_path / "org", one_revision))
    run = await swarm.start("Write")
    for _ in range(2):
        [draft] = await swarm.pending(run.id)
        await swarm.decide(draft.id, Revise(feedback="again"))
    with pytest.raises(Exception, match="revision limit reached"):
        await swarm.wait(run.id, timeout=10)


async def test_run_step_limit_fails_instead_of_hanging(
    make_swarm: SwarmFactory, tmp_path: Path
) -> None:
    def tiny_budget(data: dict[str, Any]) -> None:
        cto_writes_alone(data)
        data["max_steps"] = 3

    looping = [use("workspace.list_files")] * 10
    model = ScriptedChatModel({"ceo": [delegate(cto="loop")], "cto": looping})
    swarm = make_swarm(model, org=write_org(tmp_path / "org", tiny_budget))
    run = await swarm.start("Loop")
    with pytest.raises(Exception, match="run step limit reached: 3 model calls"):
        await swarm.wait(run.id, timeout=10)
    assert len(model.calls) == 3
