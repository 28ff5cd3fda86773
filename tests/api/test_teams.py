"""A deployment of two teams over HTTP: `qapten serve launch.yaml support.yaml` on one PostgreSQL
database, where each team's tokens reach its own runs, proposals and events and nothing of the
other team's, not even by id; and the settings such a deployment refuses, in one line."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner, Result

from qapten.api.settings import token_digest
from qapten.cli import app

from ..postgres import Cluster
from ..servers import running_server

FARM = Path(__file__).resolve().parent.parent / "charts" / "farm"
CHARTS = (str(FARM / "launch.yaml"), str(FARM / "support.yaml"))
A, B = "launch-team", "support-team"
TOKENS = {
    "a-admin": {"name": "alice", "scope": "admin", "team": A},
    "a-viewer": {"name": "victor", "scope": "viewer", "team": A},
    "b-admin": {"name": "bob", "scope": "admin", "team": B},
}
WAIT = 15.0

runner = CliRunner()


def settings_file(folder: Path, tokens: dict[str, dict[str, str]]) -> Path:
    entries = [{**spec, "sha256": token_digest(token)} for token, spec in tokens.items()]
    path = folder / "settings.yaml"
    settings = {"tokens": entries, "rate_limit": "off", "links_secret": "k" * 40}
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path


def clean_env() -> dict[str, str]:
    """This process's environment without the developer's own QAPTEN_ settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("QAPTEN_")}


class Api:
    """A client of the served API that speaks with one token."""

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params=params)

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.http.post(path, json=body)

    def items(self, path: str, **params: Any) -> list[dict[str, Any]]:
        response = self.get(path, **params)
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items


def poll(find: Callable[[], list[dict[str, Any]]], what: str) -> list[dict[str, Any]]:
    """`find()` until it finds something, within WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while True:
        found = find()
        if found:
            return found
        assert time.monotonic() < deadline, f"no {what} within {WAIT} s"
        time.sleep(0.05)


@pytest.fixture
def farm(tmp_path: Path, postgres: Cluster) -> Iterator[str]:
    """`qapten serve` of the two farm teams on a new PostgreSQL database; yields its URL."""
    db = postgres.new_database()
    settings = settings_file(tmp_path, TOKENS)
    env = {**clean_env(), "QAPTEN_TEST_EFFECTS": str(tmp_path / "effects.txt")}

    def command(port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "qapten.cli",
            "serve",
            *CHARTS,
            "--settings",
            str(settings),
            "--db",
            db,
            "--data-dir",
            str(tmp_path / "data"),
            "--port",
            str(port),
        ]

    log = tmp_path / "serve.log"
    with running_server(command, log=log, env=env, cwd=tmp_path, timeout=WAIT) as url:
        yield url


@pytest.fixture
def api(farm: str) -> Iterator[Callable[[str], Api]]:
    """Clients of the served farm, one per token; closed at the end."""
    made: list[Api] = []

    def client(token: str) -> Api:
        made.append(Api(farm, token))
        return made[-1]

    yield client
    for each in made:
        each.http.close()


@pytest.mark.slow
def test_a_teams_tokens_reach_nothing_of_another_team(api: Callable[[str], Api]) -> None:
    a, viewer, b = api("a-admin"), api("a-viewer"), api("b-admin")
    assert api("nobody").get("/runs").status_code == 401

    started = a.post("/runs", {"mission": "Launch the product"})
    assert started.status_code == 201, started.text
    run_id = started.json()["id"]
    [plan] = poll(lambda: a.items("/proposals", status="pending", run_id=run_id), "plan of A")
    assert (plan["role"], plan["kind"]) == ("ceo", "plan")

    # Team A sees its run and its proposal, with either of its tokens.
    for member in (a, viewer):
        assert [r["id"] for r in member.items("/runs")] == [run_id]
        detail = member.get(f"/runs/{run_id}")
        assert detail.status_code == 200 and [p["id"] for p in detail.json()["proposals"]] == [
            plan["id"]
        ]
        assert member.get(f"/proposals/{plan['id']}").status_code == 200
    a_events = a.items("/events")
    assert {e["run_id"] for e in a_events} - {None} == {run_id}
    # Requests without a known token are answered, and their refusal recorded, by the first
    # team's app (qapten.api.create_teams_app): the only events of A's that are of no run.
    assert [e["type"] for e in a_events if e["run_id"] is None] == ["access.refused"]
    assert (
        viewer.post(f"/proposals/{plan['id']}/decision", {"decision": "approve"}).status_code == 403
    )

    # Team B: not even the ids of A's run and proposal exist.
    assert b.items("/runs") == []
    assert b.items("/proposals") == []
    assert b.items("/proposals", status="pending") == []
    for path in (f"/runs/{run_id}", f"/proposals/{plan['id']}", f"/runs/{run_id}/events"):
        missing = b.get(path)
        assert missing.status_code == 404 and missing.json()["code"] == "not_found", path
    refused = b.post(f"/proposals/{plan['id']}/decision", {"decision": "approve"})
    assert refused.status_code == 404, refused.text
    assert b.post(f"/runs/{run_id}/cancel", {}).status_code == 404
    assert all(e["run_id"] != run_id for e in b.items("/events"))
    assert a.get(f"/proposals/{plan['id']}").json()["status"] == "pending"  # B changed nothing

    # B's own run: B sees it, among its events none of A's; A does not see it.
    other = b.post("/runs", {"mission": "Answer the tickets"})
    assert other.status_code == 201, other.text
    other_id = other.json()["id"]
    poll(lambda: b.items("/proposals", status="pending"), "plan of B")
    assert [r["id"] for r in b.items("/runs")] == [other_id]
    b_events = b.items("/events")
    assert b_events and {e["run_id"] for e in b_events} == {other_id}
    assert [r["id"] for r in a.items("/runs")] == [run_id]
    assert a.get(f"/runs/{other_id}").status_code == 404

    # A decides its own proposal; the run goes on to the CTO's action.
    decided = a.post(f"/proposals/{plan['id']}/decision", {"decision": "approve"})
    assert decided.status_code == 200 and decided.json()["decided_by"] == "alice"
    [action] = poll(lambda: a.items("/proposals", status="pending", role="cto"), "action of A")
    assert action["run_id"] == run_id
    assert b.get(f"/proposals/{action['id']}").status_code == 404
    [b_plan] = b.items("/proposals", status="pending")
    assert b_plan["role"] == "ceo"

    # A decision link of B's, clicked without any token, reaches B's app (not the first
    # team's) and decides there, as bob; the same link with A's team named decides nothing.
    links = b.post(f"/proposals/{b_plan['id']}/links", {"for": "bob"})
    assert links.status_code == 200, links.text
    approve = links.json()["approve"]
    assert approve.endswith(f"?team={B}")
    with httpx.Client(timeout=10) as browser:
        misrouted = browser.post(approve.replace(f"team={B}", f"team={A}"))
        assert misrouted.status_code == 404
        page = browser.get(approve)
        assert page.status_code == 200 and f'?team={B}"' in page.text  # the form posts to B
        assert browser.post(approve).status_code == 200
    decided = b.get(f"/proposals/{b_plan['id']}").json()
    assert (decided["status"], decided["decided_by"]) == ("approved", "bob")


# -- settings that a deployment of several charts refuses ------------------------------------


def serve(*args: str, env: dict[str, str] | None = None) -> Result:
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("QAPTEN_")}
    result = runner.invoke(app, ["serve", *CHARTS, *args], env={**unset, **(env or {})})
    assert "Traceback" not in result.output
    assert result.exc_info is None or result.exc_info[0] is SystemExit, result.exc_info
    return result


def one_error_line(result: Result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_a_token_of_an_unknown_team_is_refused(tmp_path: Path) -> None:
    tokens = {**TOKENS, "c-admin": {"name": "carol", "scope": "admin", "team": "sales-team"}}
    settings = settings_file(tmp_path, tokens)
    line = one_error_line(serve("--settings", str(settings), "--data-dir", str(tmp_path / "d")))
    assert "'carol'" in line and "'sales-team'" in line
    assert f"{A}, {B}" in line
    assert not (tmp_path / "d").exists()  # refused before anything was written


def test_a_token_without_a_team_is_refused(tmp_path: Path) -> None:
    tokens = {**TOKENS, "x-admin": {"name": "xavier", "scope": "admin"}}
    settings = settings_file(tmp_path, tokens)
    line = one_error_line(serve("--settings", str(settings), "--data-dir", str(tmp_path / "d")))
    assert "'xavier' names no team" in line


def test_several_charts_without_tokens_are_refused(tmp_path: Path) -> None:
    line = one_error_line(serve("--data-dir", str(tmp_path / "d")))
    assert "needs each team's tokens" in line and "qapten token --team" in line
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("with_team_tokens", [False, True])
def test_the_admin_token_of_the_environment_is_refused_with_several_charts(
    tmp_path: Path, with_team_tokens: bool
) -> None:
    args = ["--data-dir", str(tmp_path / "d")]
    if with_team_tokens:
        args += ["--settings", str(settings_file(tmp_path, TOKENS))]
    line = one_error_line(serve(*args, env={"QAPTEN_ADMIN_TOKEN": "one-token-for-all"}))
    assert ("QAPTEN_ADMIN_TOKEN" if with_team_tokens else "needs each team's tokens") in line
