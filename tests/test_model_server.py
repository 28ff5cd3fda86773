"""Real OpenAI-compatible servers: retries, a clear failure, and retrying a failed run.

The server is `tests.openai_mock` on 127.0.0.1, driven through `ChatOpenAI(base_url=...)` exactly
as a chart's ``model: {provider: openai, base_url: ...}`` builds it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_openai import ChatOpenAI

from qapten import Swarm
from qapten.api import ApiSettings, create_app
from qapten.api.settings import TokenSpec, token_digest
from qapten.board import Board, Task, new_task
from qapten.errors import RunFailed, RunNotFound, RunNotRetryable
from qapten.models import ModelRef, chat_model
from qapten.recovery import reopen_failed
from qapten.roles import child_report
from qapten.testing import ScriptedChatModel, delegate, deliver, use

from .conftest import SwarmFactory, write_org
from .openai_mock import MockControl, running_mock
from .servers import free_port

MODEL = "mock-model"
ALL_AUTO = {"plan": "auto", "action": "auto", "deliverable": "auto"}


@pytest.fixture(scope="module")
def mock_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_mock(tmp_path_factory.mktemp("openai-mock") / "server.log") as url:
        yield url


@pytest.fixture
async def mock(mock_url: str) -> MockControl:
    control = MockControl(mock_url)
    await control.reset()
    return control


Org = Callable[..., Swarm]


@pytest.fixture
async def swarm_on(tmp_path: Path, db: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Org]:
    """A swarm whose chart names the server: ``swarm_on(base_url, autonomy=..., **model)``."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a real key must not reach the mock
    made: list[Swarm] = []

    def build(
        base_url: str, *, autonomy: dict[str, dict[str, str]] | None = None, **model: Any
    ) -> Swarm:
        def change(data: dict[str, Any]) -> None:
            data["model"] = {"provider": "openai", "name": MODEL, "base_url": base_url, **model}
            for name, role in data["roles"].items():
                role["autonomy"] = (autonomy or {}).get(name, ALL_AUTO)

        swarm = Swarm.from_yaml(write_org(tmp_path / "org", change), db=db)
        made.append(swarm)
        return swarm

    yield build
    for swarm in made:
        await swarm.close()


def outcomes(log: list[dict[str, Any]]) -> list[str]:
    return [entry["outcome"] for entry in log]


def shown(entry: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content")) for m in entry["messages"])


# -- the model factory ----------------------------------------------------------------------------


def test_model_ref_configures_the_clients_retries_and_timeout() -> None:
    server = {"provider": "openai", "name": MODEL, "base_url": "http://127.0.0.1:9/v1"}
    model = chat_model(ModelRef.parse({**server, "max_retries": 5, "timeout": 7.5}))
    assert isinstance(model, ChatOpenAI)
    client = model.root_async_client
    assert client.max_retries == 5
    assert (client.timeout.read, client.timeout.connect) == (7.5, 7.5)

    default = chat_model(ModelRef.parse(server))
    assert isinstance(default, ChatOpenAI)
    client = default.root_async_client
    assert client.max_retries == 2  # 3 tries in all
    assert (client.timeout.read, client.timeout.connect) == (300, 10)  # never waits forever

    with pytest.raises(ValueError, match="max_retries is for provider 'openai' only"):
        ModelRef.parse({"provider": "scripted", "name": "s.json", "max_retries": 1})


# -- through the server ---------------------------------------------------------------------------


async def test_a_mission_completes_through_chat_openai(mock: MockControl, swarm_on: Org) -> None:
    human = {"ceo": {"plan": "approve", "deliverable": "approve"}, "cto": {"action": "approve"}}
    swarm = swarm_on(mock.base_url, autonomy=human)
    await mock.script(
        ceo=[delegate(cto="Write the plan"), deliver("The plan is in plan.md")],
        cto=[use("workspace.write_file", path="plan.md", content="v1"), deliver("plan.md")],
    )
    run = await swarm.start("Plan the launch")
    for expected in [("ceo", "plan"), ("cto", "action"), ("ceo", "deliverable")]:
        [proposal] = await swarm.pending(run.id)
        assert (proposal.role, proposal.kind.value) == expected
        await swarm.decide(proposal.id, "approve")
    done = await swarm.wait(run.id, timeout=20)

    assert done.result == "The plan is in plan.md"
    assert swarm.workspace(run.id).read_text("plan.md") == "v1"
    log = await mock.log()
    assert [e["role"] for e in log] == ["ceo", "cto", "cto", "ceo"]
    assert outcomes(log) == ["ok"] * 4
    assert "Result from cto (t1.1): plan.md" in shown(log[-1])
    assert sum((await swarm.tokens(run.id)).values()) == 4 * 25


async def test_rate_limits_server_errors_and_timeouts_are_retried(
    mock: MockControl, swarm_on: Org
) -> None:
    swarm = swarm_on(mock.base_url, max_retries=2, timeout=0.5)
    await mock.script(
        ceo=[delegate(cto="Plan", marketcom="Announce"), deliver("launched")],
        cto=[deliver("plan ready")],
        marketcom=[deliver("post ready")],
    )
    await mock.faults(
        {"role": "ceo", "status": 429, "retry_after": 1},
        {"role": "cto", "status": 500},
        {"role": "marketcom", "delay": 3},  # longer than the 0.5 s timeout
    )
    run = await swarm.start("Launch")
    assert (await swarm.wait(run.id, timeout=30)).result == "launched"

    ceo, cto, marketcom = [await mock.log(role) for role in ("ceo", "cto", "marketcom")]
    assert outcomes(ceo) == ["429", "ok", "ok"]
    assert ceo[1]["at"] - ceo[0]["at"] >= 0.99, "Retry-After: 1 was not honoured"
    assert outcomes(cto) == ["500", "ok"]
    assert outcomes(marketcom) == ["timeout", "ok"]
    assert [e["retry_count"] for e in ceo[:2] + cto + marketcom] == ["0", "1"] * 3
    assert not [t for t in await swarm.tasks(run.id) if t["status"] == "failed"]


async def test_garbage_tool_call_json_is_retried_with_the_error_shown(
    mock: MockControl, swarm_on: Org
) -> None:
    swarm = swarm_on(mock.base_url)
    await mock.script(
        ceo=[{"tool": "deliver", "raw_args": '{"result": "half'}, deliver("whole")],
    )
    run = await swarm.start("Answer")
    assert (await swarm.wait(run.id, timeout=20)).result == "whole"

    _, second = await mock.log("ceo")
    assert "could not be used" in shown(second)
    assert "are not valid JSON" in shown(second)  # the parser's own words reach the model
    [invalid] = [e for e in await swarm.events(run.id) if e.type == "model.invalid_output"]
    assert '{\\"result\\": \\"half' in invalid.data["raw"]


async def test_a_refused_connection_fails_the_run_with_a_clear_reason(swarm_on: Org) -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    swarm = swarm_on(base_url, max_retries=1)
    run = await swarm.start("Anything")
    with pytest.raises(RunFailed) as failed:
        await swarm.wait(run.id, timeout=20)
    reason = f"model openai:{MODEL} at {base_url} failed after 2 tries: cannot connect: "
    assert failed.value.reason == reason + "Connection refused"


async def test_a_server_that_stays_down_fails_the_run_and_retry_finishes_it(
    mock: MockControl, swarm_on: Org
) -> None:
    swarm = swarm_on(mock.base_url, autonomy={"cto": {"action": "approve"}}, max_retries=1)
    await mock.script(
        ceo=[delegate(cto="Write the plan")],
        cto=[use("workspace.write_file", path="plan.md", content="v1")],
    )
    run = await swarm.start("Plan")
    [action] = await swarm.pending(run.id)
    await mock.down(503)
    await swarm.decide(action.id, "approve")  # the tool runs; the cto's next call finds no server

    with pytest.raises(RunFailed) as failed:
        await swarm.wait(run.id, timeout=20)
    reason = (
        f"model openai:{MODEL} at {mock.base_url} failed after 2 tries: "
        "503 Service Unavailable: injected failure"
    )
    assert failed.value.reason == reason
    tasks = {t["id"]: t for t in await swarm.tasks(run.id)}
    assert tasks["t1.1"]["error"] == reason  # the cto's own failure, then the ceo's
    assert (tasks["t1"]["status"], tasks["t1"]["error"]) == ("failed", reason)
    assert (await swarm.run(run.id)).error == reason

    await mock.up()
    before = len(await mock.log())
    await mock.script(cto=[deliver("plan.md is written")], ceo=[deliver("all planned")])
    retried = await swarm.retry(run.id)
    assert retried.status == "running" and retried.error is None
    assert (await swarm.wait(run.id, timeout=20)).result == "all planned"

    # Only the steps that had failed asked the model again; the approved write ran once.
    after = (await mock.log())[before:]
    assert [(e["role"], e["outcome"]) for e in after] == [("cto", "ok"), ("ceo", "ok")]
    assert [(c.tool, c.status) for c in await swarm.tool_calls(run.id)] == [
        ("workspace.write_file", "done")
    ]
    ceo_prompt = shown(after[1])
    assert "Result from cto (t1.1): plan.md is written" in ceo_prompt
    assert "failed" not in ceo_prompt  # the manager is not told about the failure it retried
    [event] = [e for e in await swarm.events(run.id) if e.type == "run.retried"]
    assert event.data == {"by": "human", "tasks": ["t1.1", "t1"]}
    with pytest.raises(RunNotRetryable, match="is done: only a failed run can be retried"):
        await swarm.retry(run.id)


async def test_retry_over_http(mock: MockControl, swarm_on: Org) -> None:
    swarm = swarm_on(mock.base_url, max_retries=0)
    admin = TokenSpec(name="alice", sha256=token_digest("admin-token"), scope="admin")
    app = create_app(swarm, ApiSettings(tokens=(admin,)))
    headers = {"Authorization": "Bearer admin-token"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://q", headers=headers) as http:
        await mock.down(500)
        run = await swarm.start("Anything")
        with pytest.raises(RunFailed, match="failed after 1 try: 500 Internal Server Error"):
            await swarm.wait(run.id, timeout=20)

        assert (await http.post("/api/v1/runs/r_nope/retry")).status_code == 404
        await mock.up()
        await mock.script(ceo=[deliver("fine now")])
        retried = await http.post(f"/api/v1/runs/{run.id}/retry")
        assert retried.status_code == 200 and retried.json()["status"] == "running"
        assert (await swarm.wait(run.id, timeout=20)).result == "fine now"

        again = await http.post(f"/api/v1/runs/{run.id}/retry")
        assert again.status_code == 409
        assert again.json()["code"] == "not_retryable"
        assert again.json()["details"] == {"status": "done"}
    [event] = [e for e in await swarm.events(run.id) if e.type == "run.retried"]
    assert event.data["by"] == "alice"


# -- what a retry reopens -------------------------------------------------------------------------


async def test_retry_gives_a_task_that_failed_on_unusable_output_another_chance(
    make_swarm: SwarmFactory,
) -> None:
    model = ScriptedChatModel({"ceo": ["hmm", "well", "so", deliver("found it")]})
    swarm = make_swarm(model)
    run = await swarm.start("Think")
    with pytest.raises(RunFailed, match="no usable answer in 3 tries"):
        await swarm.wait(run.id, timeout=10)

    assert (await swarm.retry(run.id)).status == "running"
    [final] = await swarm.pending(run.id)
    with pytest.raises(RunNotRetryable, match="is waiting: only a failed run can be retried"):
        await swarm.retry(run.id)
    with pytest.raises(RunNotFound):
        await swarm.retry("r_unknown")
    await swarm.decide(final.id, "approve")
    assert (await swarm.wait(run.id, timeout=10)).result == "found it"
    assert len(model.calls) == 4


def ended(task: Task, status: str, *, result: str | None = None, error: str | None = None) -> Task:
    task["status"], task["result"], task["error"] = status, result, error
    return task


def test_retry_reopens_the_latest_failed_children_not_those_their_manager_replaced() -> None:
    old = ended(new_task("t1.1", "cto", "Plan", parent="t1"), "failed", error="model down")
    new = ended(new_task("t1.2", "cto", "Plan again", parent="t1"), "failed", error="model down")
    ok = ended(new_task("t1.3", "support", "Hours", parent="t1"), "done", result="9-5")
    notes = [
        "You delegated to cto (t1.1).",
        child_report(old),
        "You delegated to cto (t1.2), support (t1.3).",
        child_report(new),
        child_report(ok),
    ]
    root = ended(new_task("t1", "ceo", "Launch"), "failed", error="model down")
    root["notes"], root["children"] = notes, ["t1.1", "t1.2", "t1.3"]
    board = Board(
        mission="Launch", root="t1", steps=6, tasks={t["id"]: t for t in (root, old, new, ok)}
    )

    patches = reopen_failed(board, {"t1": 2})  # the latest delegation made 2 tasks: t1.2 and t1.3

    assert patches == {
        "t1.2": {"status": "thinking", "awaiting": [], "notes": [], "error": None},
        "t1": {
            "status": "delegated",
            "awaiting": ["t1.2"],
            "notes": [notes[0], notes[1], notes[2], notes[4]],
            "error": None,
        },
    }
