"""Every example runs, offline, and shows what it promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qapten.testing import ask, delegate, deliver, use

from .conftest import ORG, ROOT
from .openai_mock import running_mock, wire_script
from .servers import running_server

ADMIN_TOKEN = "examples-admin-token"


def run_example(
    name: str,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    returncode: int = 0,
) -> subprocess.CompletedProcess[str]:
    """`python examples/NAME args…` with the venv's python, in a clean environment; it must exit
    with `returncode`."""
    out = subprocess.run(
        [sys.executable, f"examples/{name}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={"COLUMNS": "200", "PATH": "", **(env or {})},
    )
    assert out.returncode == returncode, out.stdout + out.stderr
    return out


def without_qapten_settings() -> dict[str, str]:
    """This process's environment without the developer's own QAPTEN_ settings (tokens, URL)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("QAPTEN_")}


@pytest.mark.slow
def test_quickstart_runs_a_full_mission() -> None:
    out = run_example("quickstart.py")
    for expected in (
        "ceo        plan",
        "cto        action",
        "support    question",
        "Final deliverable: Launch plan",
        "- Budget: 300 EUR/month",
    ):
        assert expected in out.stdout
    assert out.stdout.count(" done ") == 4  # the whole task tree finished


def test_support_desk_chart_is_valid() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "qapten.cli", "validate", "examples/support_desk/org.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=without_qapten_settings(),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("ok: 2 roles")


@pytest.mark.slow
def test_support_desk_gates_only_the_answer_to_the_customer() -> None:
    lines = run_example("support_desk.py").stdout.splitlines()
    waited = [line.split(":")[1].strip() for line in lines if "waits for you:" in line]
    alone = [line.split(":")[1].strip() for line in lines if "ran alone:" in line]
    assert waited == ["desk_lead deliverable"]  # approve
    assert alone == ["desk_lead plan", "agent action", "agent deliverable"]  # auto
    assert "1 approved by a human, 3 ran alone (auto)" in lines
    answer = "Answer to the customer: Hi Dana, sorry about the double charge"
    assert any(line.startswith(answer) for line in lines)
    assert any(line.startswith("replies/T-1042.md: Hi Dana") for line in lines)


@pytest.mark.slow
def test_host_app_serves_its_own_route_and_qapten_under_a_prefix() -> None:
    lines = run_example("host_app.py", "--self-test").stdout.splitlines()
    assert lines == [
        "GET / -> 200 {'message': 'hello from the host'}",
        "GET /ops/healthz -> 200 {'status': 'ok'}",
        "GET /ops/org -> 200 Support desk: desk_lead, agent (root desk_lead)",
    ]


@pytest.mark.slow
def test_approve_over_http_approves_every_proposal_of_a_served_run(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    plan = "Launch plan ready: hosting in plan.md, announcement in launch.md."
    script.write_text(
        json.dumps(
            {
                "ceo": [delegate(cto="Write plan.md", marketcom="Draft launch.md"), deliver(plan)],
                "cto": [
                    use("workspace.write_file", path="plan.md", content="# Plan"),
                    deliver("plan.md written"),  # auto: not approved over HTTP
                ],
                "marketcom": [
                    use("workspace.write_file", path="launch.md", content="We launch"),  # auto
                    deliver("launch.md drafted"),
                ],
            }
        ),
        encoding="utf-8",
    )

    def serve(port: int) -> list[str]:
        return [
            *(sys.executable, "-m", "qapten.cli", "serve", str(ORG), "--port", str(port)),
            *("--data-dir", str(tmp_path / "data"), "--model", f"scripted:{script}"),
        ]

    env = {**without_qapten_settings(), "QAPTEN_ADMIN_TOKEN": ADMIN_TOKEN}
    with running_server(serve, log=tmp_path / "serve.log", env=env, cwd=tmp_path) as url:
        out = run_example(
            "approve_over_http.py",
            *("--url", url, "--mission", "Launch the coaching app", "--timeout", "30"),
            env={"QAPTEN_TOKEN": ADMIN_TOKEN},
        )
    lines = out.stdout.splitlines()
    assert lines[0].endswith("started: Launch the coaching app")
    decided = [" ".join(line.split()[:2]) for line in lines[1:-3]]
    # The plan first, the synthesis last; the two reports work in parallel, in either order.
    assert decided[0] == "ceo plan" and decided[-1] == "ceo deliverable"
    assert sorted(decided[1:-1]) == ["cto action", "marketcom deliverable"]
    assert lines[-3] == "approved 4 proposals; run done"
    assert lines[-2].startswith("Tokens spent: ceo ")
    assert lines[-1] == f"Deliverable: {plan}"


@pytest.fixture(scope="module")
def openai_mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """tests/openai_mock.py on 127.0.0.1, shared by the tests of openai_compatible.py."""
    with running_mock(tmp_path_factory.mktemp("openai-mock") / "server.log") as url:
        yield url


def mock_call(url: str, method: str, path: str, body: Any = None) -> Any:
    """One call of the mock's control interface (reset, script, faults, log)."""
    response = httpx.request(method, f"{url}/mock/{path}", json=body, timeout=10)
    response.raise_for_status()
    return response.json()


@pytest.mark.slow
def test_openai_compatible_runs_the_default_org_on_a_server(openai_mock: str) -> None:
    plan = "Launch plan: EU hosting (plan.md), announcement (launch.md), support 9-17."
    script = {
        "ceo": [
            delegate(cto="Write plan.md", marketcom="Draft launch.md", support="Staff support"),
            deliver(plan),
        ],
        "cto": [
            use("workspace.write_file", path="plan.md", content="# Plan"),
            deliver("plan.md written"),
        ],
        "marketcom": [
            use("workspace.write_file", path="launch.md", content="We launch"),
            deliver("launch.md drafted"),
        ],
        "support": [ask("Which hours?"), deliver("Support 9-17 CET")],
    }
    mock_call(openai_mock, "POST", "reset")
    mock_call(openai_mock, "POST", "script", wire_script(script))
    mock_call(openai_mock, "POST", "faults", [{"role": "ceo", "status": 503}])  # retried

    base_url = f"{openai_mock}/v1"
    out = run_example("openai_compatible.py", "--base-url", base_url, "--model", "mock-model")

    lines = out.stdout.splitlines()
    assert lines[:2] == [
        f"Brightness (4 roles), mock-model at {base_url}",
        "Mission: Launch the public-speaking coaching app",
    ]
    decided = [" ".join([*line.split()[:2], line.split()[-1]]) for line in lines[2:-3]]
    # The plan first, the synthesis last; the three reports work in parallel, in any order.
    assert decided[0] == "ceo plan approve" and decided[-1] == "ceo deliverable approve"
    assert sorted(decided[1:-1]) == [
        "cto action approve",
        "marketcom deliverable approve",
        "support question answer",
    ]
    assert lines[-3] == f"Deliverable: {plan}"
    # The mock counts 25 tokens an answer, two answers a role; the refused request costs none.
    assert lines[-2] == "Tokens spent: ceo 50, cto 50, marketcom 50, support 50 (200 in all)"
    assert lines[-1].startswith("Took ") and lines[-1].endswith(" s")
    log = mock_call(openai_mock, "GET", "log")
    assert [e["outcome"] for e in log if e["role"] == "ceo"] == ["503", "ok", "ok"]
    assert out.stderr == ""


@pytest.mark.slow
def test_openai_compatible_runs_the_support_desk_and_says_why_it_failed(
    openai_mock: str,
) -> None:
    mock_call(openai_mock, "POST", "reset")  # no reply scripted: a 400, which is not retried

    base_url = f"{openai_mock}/v1"
    args = ("--base-url", base_url, "--model", "mock-model", "--org", "support-desk")
    out = run_example("openai_compatible.py", *args, returncode=1)

    lines = out.stdout.splitlines()
    assert lines[:2] == [
        f"Support desk (2 roles), mock-model at {base_url}",
        "Mission: T-1042 from Dana: I was charged twice for my March invoice. Please fix it.",
    ]
    [failed] = lines[2:]
    assert failed.startswith("Run failed after ")
    reason = f"model openai:mock-model at {base_url} failed after 1 try: 400 Bad Request"
    assert failed.endswith(f"{reason}: no scripted reply left for desk_lead")


def test_openai_compatible_needs_a_key_or_a_server() -> None:
    out = run_example("openai_compatible.py", "--model", "gpt-4o-mini", returncode=2)
    assert out.stdout == "set OPENAI_API_KEY to use OpenAI, or pass --base-url of another server\n"
