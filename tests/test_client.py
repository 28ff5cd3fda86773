"""`QaptenClient` against a real server (uvicorn on 127.0.0.1, the scripted model): a run started,
followed, filtered, cancelled, retried and decided with the client alone."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from qapten.api.schemas import ProposalPublic, RunDetail, RunPublic, TaskPublic
from qapten.client import (
    AlreadyDecided,
    ClientError,
    ProposalView,
    QaptenClient,
    RunDetailView,
    RunView,
    TaskView,
)
from qapten.testing import delegate, deliver, use

from .servers import running_server

TOKEN = "client-test-token"
Serve = Callable[[dict[str, Any]], QaptenClient]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """Start the e2e app (tests.e2e.server) on the default chart with a per-role script; return
    a client of it. Server and client are closed after the test."""
    with ExitStack() as stack:

        def start(script: dict[str, Any]) -> QaptenClient:
            script_file = tmp_path / "script.json"
            script_file.write_text(json.dumps(script), encoding="utf-8")
            env = {k: v for k, v in os.environ.items() if not k.startswith("QAPTEN_")}
            env |= {
                "QAPTEN_TEST_DB": f"sqlite:///{tmp_path / 'qapten.db'}",
                "QAPTEN_TEST_SCRIPT": str(script_file),
                "QAPTEN_ADMIN_TOKEN": TOKEN,
            }

            def command(port: int) -> list[str]:
                return [
                    *(sys.executable, "-m", "uvicorn", "--factory", "tests.e2e.server:make_app"),
                    *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
                ]

            url = stack.enter_context(running_server(command, log=tmp_path / "server.log", env=env))
            return stack.enter_context(QaptenClient(url, TOKEN))

        yield start


def pending_soon(client: QaptenClient, run_id: str, count: int) -> list[ProposalView]:
    """The run's pending proposals, oldest first, once there are `count` (runs advance behind)."""
    deadline = time.monotonic() + 10
    while len(found := client.pending(run_id, oldest_first=True)) < count:
        assert time.monotonic() < deadline, f"{len(found)} pending proposals, not {count}"
        time.sleep(0.05)
    return found


def status_soon(client: QaptenClient, run_id: str, status: str) -> RunDetailView:
    deadline = time.monotonic() + 10
    while (run := client.run(run_id)).status != status:
        assert time.monotonic() < deadline, f"run {run_id} is {run.status}, not {status}"
        time.sleep(0.05)
    return run


@pytest.mark.slow
def test_a_run_started_filtered_cancelled_and_decided_with_the_client(serve: Serve) -> None:
    client = serve(
        {
            "ceo": [
                delegate(cto="Write plan.md", marketcom="Draft the post"),  # run a
                delegate(cto="Never mind"),  # run b, cancelled
                deliver("Launched: plan.md and the post"),  # run a
            ],
            "cto": [
                use("workspace.write_file", path="plan.md", content="# Plan"),
                deliver("plan.md written"),  # auto
            ],
            "marketcom": [deliver("Post drafted")],
        }
    )
    a = client.start("Launch the coaching app")
    assert type(a) is RunView
    assert (a.mission, a.status, a.org, a.result) == (
        "Launch the coaching app",
        "running",
        "Brightness",
        None,
    )
    [plan] = pending_soon(client, a.id, 1)
    b = client.start("Something else")
    [other] = pending_soon(client, b.id, 1)

    assert (plan.run_id, plan.task_id, plan.role, plan.kind) == (a.id, "t1", "ceo", "plan")
    assert (plan.act, plan.status, plan.decided_by) == ("delegate", "pending", None)
    assert plan.payload["tasks"] == [
        {"to": "cto", "brief": "Write plan.md"},
        {"to": "marketcom", "brief": "Draft the post"},
    ]
    assert client.proposal(plan.id) == plan
    assert [p.id for p in client.pending()] == [other.id, plan.id]  # newest first, like the API
    assert [p.id for p in client.pending(oldest_first=True)] == [plan.id, other.id]
    assert [p.id for p in client.pending(a.id)] == [plan.id]
    assert client.pending("r_unknown") == []

    cancelled = client.cancel(b.id)
    assert (cancelled.status, cancelled.error, cancelled.finished) == (
        "cancelled",
        "cancelled by admin",
        True,
    )
    assert client.proposal(other.id).status == "cancelled"
    assert client.cancel(b.id) == cancelled  # a finished run stays as it is
    assert [p.id for p in client.pending()] == [plan.id]

    decided = client.decide(plan.id, "approve")
    assert (decided.status, decided.decided_by) == ("approved", "admin")
    with pytest.raises(AlreadyDecided, match="already approved by admin") as late:
        client.decide(plan.id, "reject", feedback="too late")
    assert late.value.exit_code == 1
    reports = pending_soon(client, a.id, 2)
    assert sorted((p.role, p.kind, p.act) for p in reports) == [
        ("cto", "action", "workspace.write_file"),
        ("marketcom", "deliverable", "deliver"),
    ]
    made = [(p.created_at, p.id) for p in reports]
    assert made == sorted(made)
    assert client.pending(a.id) == reports[::-1]
    for proposal in reports:
        client.decide(proposal.id, "approve")
    [final] = pending_soon(client, a.id, 1)
    assert (final.role, final.kind, final.payload) == (
        "ceo",
        "deliverable",
        {"result": "Launched: plan.md and the post"},
    )
    client.decide(final.id, "approve")

    done = status_soon(client, a.id, "done")
    assert done.finished and done.result == "Launched: plan.md and the post"
    assert [(t.id, t.role, t.status) for t in done.tasks] == [
        ("t1", "ceo", "done"),
        ("t1.1", "cto", "done"),
        ("t1.2", "marketcom", "done"),
    ]
    assert done.tasks[0].children == ["t1.1", "t1.2"]
    assert sorted(done.tokens) == ["ceo", "cto", "marketcom"]
    assert all(n > 0 for n in done.tokens.values())
    assert (done.proposals[0].id, done.proposals[-1].id) == (plan.id, final.id)  # oldest first

    assert [r.id for r in client.runs()] == [b.id, a.id]  # newest first
    assert [r.id for r in client.runs("done")] == [a.id]
    assert [r.id for r in client.runs("cancelled")] == [b.id]
    assert client.runs("failed") == []


@pytest.mark.slow
def test_a_failed_run_is_retried_and_mistakes_are_one_line(serve: Serve) -> None:
    # Three answers that are no act: the ceo's task fails; the retry gets a deliverable.
    client = serve({"ceo": ["hmm", "well", "so", deliver("found it")]})
    run = client.start("Think")
    failed = status_soon(client, run.id, "failed")
    assert failed.error is not None and "no usable answer in 3 tries" in failed.error
    assert failed.tasks[0].status == "failed"

    retried = client.retry(run.id)
    assert (retried.status, retried.error) == ("running", None)
    [final] = pending_soon(client, run.id, 1)
    with pytest.raises(ClientError, match="only a failed run can be retried") as again:
        client.retry(run.id)
    assert type(again.value) is ClientError and again.value.exit_code == 1
    client.decide(final.id, "approve")
    assert status_soon(client, run.id, "done").result == "found it"

    mistakes: list[Callable[[], object]] = [
        lambda: client.run("r_unknown"),
        lambda: client.cancel("r_unknown"),
        lambda: client.retry("r_unknown"),
        lambda: client.proposal("p_unknown"),
        lambda: client.start(" "),
        lambda: client.runs("sleeping"),
        lambda: client.decide(final.id, "maybe"),
    ]
    for mistake in mistakes:
        with pytest.raises(ClientError) as caught:
            mistake()
        assert caught.value.exit_code == 2, caught.value.message
        assert "\n" not in caught.value.message
    with pytest.raises(ClientError, match="mission: the mission is blank"):
        client.start(" ")
    with pytest.raises(ClientError, match="HTTP 404"):  # escaped: not a page of GET /proposals
        client.run("../proposals")


# -- without a server -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("view", "schema"),
    [
        (ProposalView, ProposalPublic),
        (RunView, RunPublic),
        (TaskView, TaskPublic),
        (RunDetailView, RunDetail),
    ],
)
def test_the_views_name_every_field_the_api_sends(view: type[Any], schema: type[Any]) -> None:
    assert set(view.model_fields) == set(schema.model_fields)


def test_pending_of_one_run_oldest_first_across_pages() -> None:
    def proposal(n: int) -> dict[str, Any]:
        return {
            "id": f"p_{n}",
            "run_id": "r_1",
            "role": "ceo",
            "kind": "plan",
            "title": "Delegate",
            "status": "pending",
            "created_at": f"2026-01-01T00:00:0{n}Z",
        }

    seen: list[httpx.URL] = []

    def newest_first(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        if "cursor" not in request.url.params:
            return httpx.Response(
                200, json={"items": [proposal(3), proposal(2)], "next_cursor": "c"}
            )
        return httpx.Response(200, json={"items": [proposal(1)], "next_cursor": None})

    with QaptenClient("http://q", "t", transport=httpx.MockTransport(newest_first)) as client:
        assert [p.id for p in client.pending("r_1", oldest_first=True)] == ["p_1", "p_2", "p_3"]
    assert [dict(url.params) for url in seen] == [
        {"status": "pending", "run_id": "r_1", "limit": "500"},
        {"status": "pending", "run_id": "r_1", "limit": "500", "cursor": "c"},
    ]


def test_a_conflict_that_is_no_decision_is_no_already_decided() -> None:
    def conflict(request: httpx.Request) -> httpx.Response:
        body = {
            "code": "not_retryable",
            "message": "run r_1 is done",
            "details": {"status": "done"},
        }
        return httpx.Response(409, json=body)

    with (
        QaptenClient("http://q", "t", transport=httpx.MockTransport(conflict)) as client,
        pytest.raises(ClientError) as caught,
    ):
        client.retry("r_1")
    assert type(caught.value) is ClientError  # not AlreadyDecided
    assert (caught.value.message, caught.value.exit_code) == ("run r_1 is done", 1)


def test_an_answer_that_is_not_a_run_is_one_line() -> None:
    def nonsense(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"id": "r_1"})

    with (
        QaptenClient("http://q", "t", transport=httpx.MockTransport(nonsense)) as client,
        pytest.raises(ClientError) as caught,
    ):
        client.run("r_1")
    assert caught.value.message == "http://q answered with something that is not a run"
