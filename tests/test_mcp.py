"""Tools from MCP servers: gated, approved and journaled like built-in tools; clear errors."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from qapten import ConfigurationError, Edit, InvalidDecision, OrgChart, OrgChartError
from qapten.acts import InvalidChoice, validate_args
from qapten.testing import ScriptedChatModel, deliver, use

from .conftest import SwarmFactory
from .servers import free_port

SERVER = Path(__file__).resolve().parent / "mcp_server.py"


def write_chart(folder: Path, *, server: dict[str, Any], tools: list[str], **lead: Any) -> Path:
    """A one-role chart whose lead may call `tools`, with the notes server copied beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(SERVER, folder / "notes_server.py")
    (folder / "lead.md").write_text("You keep the notes.\n", encoding="utf-8")
    chart = {
        "name": "Acme",
        "mcp_servers": {"notes": server},
        "roles": {"lead": {"reports_to": None, "tools": tools, **lead}},
    }
    path = folder / "org.yaml"
    path.write_text(yaml.safe_dump(chart, sort_keys=False), encoding="utf-8")
    return path


def notes_server(notes: Path) -> dict[str, Any]:
    # A relative script: a stdio server runs in the chart's folder.
    return {
        "command": sys.executable,
        "args": ["notes_server.py"],
        "env": {"NOTES_FILE": str(notes)},
    }


async def test_an_mcp_tool_call_is_gated_approved_and_journaled(
    tmp_path: Path, make_swarm: SwarmFactory
) -> None:
    notes = tmp_path / "notes.txt"
    org = write_chart(
        tmp_path / "org",
        server=notes_server(notes),
        tools=["notes.add", "notes.count"],
        autonomy={"action": "approve", "deliverable": "auto"},
    )
    model = ScriptedChatModel(
        {"lead": [use("notes.add", text="buy milk", tags=["home"]), deliver("noted")]}
    )
    swarm = make_swarm(model, org=org)
    run = await swarm.start("Remember to buy milk")

    # Gated: the call waits for a human, with its exact arguments; nothing ran yet.
    [action] = await swarm.pending(run.id)
    assert (action.kind, action.act) == ("action", "notes.add")
    assert action.payload == {"text": "buy milk", "tags": ["home"]}
    assert not notes.exists()

    await swarm.decide(action.id, "approve")
    done = await swarm.wait(run.id, timeout=20)
    assert done.result == "noted"

    # Ran exactly once, journaled under the proposal, and the role saw the server's answer.
    assert notes.read_text(encoding="utf-8") == "buy milk [home]\n"
    [call] = await swarm.tool_calls(run.id)
    assert (call.tool, call.args, call.status) == (
        "notes.add",
        {"text": "buy milk", "tags": ["home"]},
        "done",
    )
    assert call.result == "added note 1: buy milk [home]"
    assert "You called notes.add: done: added note 1: buy milk [home]" in (
        model.calls_for("lead")[1].prompt
    )
    assert model.calls_for("lead")[0].tools == ["notes_add", "notes_count", "ask_human", "deliver"]


async def test_mcp_tools_keep_the_server_schema_and_hints(
    tmp_path: Path, make_swarm: SwarmFactory
) -> None:
    notes = tmp_path / "notes.txt"
    org = write_chart(
        tmp_path / "org",
        server=notes_server(notes),
        tools=["notes.add", "notes.count", "notes.clear"],
    )
    swarm = make_swarm({"lead": [use("notes.add", text="x")]}, org=org)
    await swarm.open()
    specs = {spec.name: spec for spec in swarm.menus["lead"]}

    parameters = specs["notes.add"].as_openai_tool()["function"]["parameters"]
    assert parameters["required"] == ["text"]
    assert parameters["properties"]["tags"]["anyOf"][0] == {
        "items": {"type": "string"},
        "type": "array",
    }
    assert specs["notes.add"].description == "Append a note to the notes file."
    with pytest.raises(InvalidChoice, match="text: 5 is not of type 'string'"):
        validate_args(specs["notes.add"], {"text": 5}, [])
    assert validate_args(specs["notes.add"], {"text": "a"}, []) == {"text": "a"}

    # Only the hints make a tool safe to run again after a crash.
    tools = {name: spec.tool for name, spec in specs.items() if spec.tool is not None}
    assert {name: tool.idempotent for name, tool in tools.items()} == {
        "notes.add": False,
        "notes.count": True,  # readOnlyHint
        "notes.clear": True,  # idempotentHint
    }

    # A human's edit is held to the same schema.
    run = await swarm.start("Note")
    [action] = await swarm.pending(run.id)
    with pytest.raises(InvalidDecision, match="'text' is a required property"):
        await swarm.decide(action.id, Edit(payload={"tags": ["a"]}))


async def test_a_tool_error_is_a_failed_call_the_role_is_told_about(
    tmp_path: Path, make_swarm: SwarmFactory
) -> None:
    notes = tmp_path / "notes.txt"
    org = write_chart(
        tmp_path / "org",
        server=notes_server(notes),
        tools=["notes.clear"],
        autonomy={"action": "auto", "deliverable": "auto"},
    )
    model = ScriptedChatModel(
        {"lead": [use("notes.clear", confirm=False), deliver("could not clear")]}
    )
    swarm = make_swarm(model, org=org)
    run = await swarm.start("Clear the notes")
    assert (await swarm.wait(run.id, timeout=20)).result == "could not clear"
    [call] = await swarm.tool_calls(run.id)
    assert call.status == "failed"
    assert "clear needs confirm: true" in (call.result or "")
    prompt = model.calls_for("lead")[1].prompt
    assert "You called notes.clear: failed: McpToolError:" in prompt
    assert "clear needs confirm: true" in prompt


async def test_a_server_that_stops_answering_is_restarted_at_its_next_call(
    tmp_path: Path, make_swarm: SwarmFactory, caplog: pytest.LogCaptureFixture
) -> None:
    notes = tmp_path / "notes.txt"
    org = write_chart(
        tmp_path / "org",
        server=notes_server(notes),
        tools=["notes.crash", "notes.count"],
        autonomy={"action": "auto", "deliverable": "auto"},
    )
    model = ScriptedChatModel({"lead": [use("notes.crash"), use("notes.count"), deliver("ok")]})
    swarm = make_swarm(model, org=org)
    run = await swarm.start("Count the notes")
    assert (await swarm.wait(run.id, timeout=20)).result == "ok"
    crash, count = await swarm.tool_calls(run.id)
    assert crash.status == "failed"
    assert "MCP server 'notes' gave no answer" in (crash.result or "")
    assert "the call's effect is unknown" in (crash.result or "")
    assert "crashing on purpose" in caplog.text  # the tail of its stderr, for the operator
    assert (count.status, count.result) == ("done", "0 notes")


@pytest.mark.parametrize(
    ("server", "message"),
    [
        (
            {"command": "qapten-no-such-command"},
            "MCP server 'notes' failed to start: command 'qapten-no-such-command' not found",
        ),
        (
            {"command": sys.executable, "args": ["-c", "import sys; sys.exit('boom: no config')"]},
            "MCP server 'notes' failed to start: it exited, or closed the connection, before "
            "answering; its stderr ended with:\nboom: no config",
        ),
        (
            {"command": sys.executable, "args": ["notes_server.py"], "cwd": "missing"},
            "MCP server 'notes' failed to start: its working directory",
        ),
        (
            {"command": sys.executable, "env": {"NOTES_FILE": "${QAPTEN_TEST_UNSET}"}},
            "MCP server 'notes': env.NOTES_FILE reads the environment variable "
            "QAPTEN_TEST_UNSET, which is not set",
        ),
    ],
)
async def test_a_server_that_fails_to_start_is_named(
    tmp_path: Path, make_swarm: SwarmFactory, server: dict[str, Any], message: str
) -> None:
    org = write_chart(tmp_path / "org", server=server, tools=["notes.add"])
    swarm = make_swarm({}, org=org)
    with pytest.raises(ConfigurationError) as caught:
        await swarm.start("Note something")
    assert str(caught.value).startswith(message)
    assert swarm.menus.get("lead") is None  # nothing opened: the swarm can be fixed and retried


async def test_a_tool_the_server_does_not_offer_lists_those_it_does(
    tmp_path: Path, make_swarm: SwarmFactory
) -> None:
    org = write_chart(
        tmp_path / "org", server=notes_server(tmp_path / "notes.txt"), tools=["notes.delete"]
    )
    swarm = make_swarm({}, org=org)
    with pytest.raises(
        ConfigurationError,
        match=r"MCP server 'notes' has no tool 'delete' \(in the chart: notes\.delete\); "
        r"its tools: add, clear, count, crash",
    ):
        await swarm.open()


async def test_streamable_http_server(
    tmp_path: Path, make_swarm: SwarmFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("one\ntwo\n", encoding="utf-8")
    monkeypatch.setenv("QAPTEN_TEST_TOKEN", "s3cret")
    with http_notes_server(notes, tmp_path / "server.log") as url:
        server = {"url": url, "headers": {"Authorization": "Bearer ${QAPTEN_TEST_TOKEN}"}}
        org = write_chart(
            tmp_path / "org",
            server=server,
            tools=["notes.count"],
            autonomy={"action": {"notes.count": "auto"}, "deliverable": "auto"},
        )
        model = ScriptedChatModel({"lead": [use("notes.count"), deliver("two notes")]})
        swarm = make_swarm(model, org=org)
        run = await swarm.start("Count the notes")
        assert (await swarm.wait(run.id, timeout=20)).result == "two notes"
        [call] = await swarm.tool_calls(run.id)
        assert call.result == "2 notes"
        await swarm.close()
    assert "You called notes.count: done: 2 notes" in model.calls_for("lead")[1].prompt


@contextmanager
def http_notes_server(notes: Path, log: Path) -> Iterator[str]:
    """The notes server over streamable HTTP on a free loopback port; yields its MCP URL."""
    port = free_port()
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            [sys.executable, str(SERVER), "--http", str(port)],
            env={**os.environ, "NOTES_FILE": str(notes)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                text = log.read_text(encoding="utf-8")
                raise RuntimeError(f"the MCP server exited with {proc.returncode}:\n{text}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("the MCP server did not listen within 30 s") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# -- the chart ------------------------------------------------------------------------------------

CHARTS = Path(__file__).resolve().parent / "charts"


def chart_problems(text: str) -> list[str]:
    with pytest.raises(OrgChartError) as caught:
        OrgChart.from_text(text, source="org.yaml", base_dir=CHARTS)
    return [str(problem) for problem in caught.value.problems]


def test_a_tool_of_an_undeclared_server_is_a_located_chart_error() -> None:
    text = (
        "name: Acme\n"
        "mcp_servers:\n"
        "  notes: {command: python, args: [notes.py]}\n"
        "  search: {url: 'https://mcp.example.com/mcp'}\n"
        "roles:\n"
        "  lead:\n"
        "    tools: [notes.add, files.search]\n"
    )
    assert chart_problems(text) == [
        "org.yaml:7:24: roles.lead.tools[1]: no MCP server 'files' for tool 'files.search'; "
        "servers under mcp_servers: notes, search"
    ]
    chart = OrgChart.from_text(text.replace("files.search", "search.web"), base_dir=CHARTS)
    assert chart.roles["lead"].tools == ("notes.add", "search.web")
    # A stdio server runs in the chart's folder unless cwd names another, relative to it.
    assert chart.mcp_servers["notes"].cwd == CHARTS
    assert chart.mcp_servers["search"].cwd is None


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("notes: {args: [x]}", "3:10: mcp_servers.notes: give command (a program speaking MCP"),
        ("notes: {command: x, headers: {A: b}}", "3:23: mcp_servers.notes.headers: headers is "),
        ("notes: {url: 'ftp://x'}", "3:16: mcp_servers.notes.url: give the server's http:// or"),
        ("notes: {command: x, cmd: y}", "3:23: mcp_servers.notes: unknown key 'cmd'; allowed "),
        (
            "notes: {command: x, env: {API_TOKEN: abc123}}",
            "3:40: mcp_servers.notes.env.API_TOKEN: this would put a secret in the chart",
        ),
        ("Notes: {command: x}", "3:3: mcp_servers.Notes: bad MCP server name 'Notes'"),
        ("workspace: {command: x}", "3:3: mcp_servers.workspace: 'workspace' is the namespace"),
    ],
)
def test_server_mistakes_are_located(server: str, expected: str) -> None:
    text = f"name: Acme\nmcp_servers:\n  {server}\nroles:\n  lead: {{}}\n"
    [problem] = chart_problems(text)
    assert problem.startswith(f"org.yaml:{expected}"), problem
    assert "abc123" not in problem


def test_the_schema_describes_mcp_servers() -> None:
    schema = OrgChart.json_schema()
    servers = schema["properties"]["mcp_servers"]
    assert list(servers["patternProperties"]) == ["^[a-z][a-z0-9_]*$"]
    server = schema["$defs"]["McpServer"]
    assert {"command", "args", "env", "cwd", "url", "headers", "timeout"} <= set(
        server["properties"]
    )
    assert server["oneOf"] == [{"required": ["command"]}, {"required": ["url"]}]
