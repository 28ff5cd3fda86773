"""`qapten serve` as a real process on a free loopback port; `inbox`, `decide` and `token` as its
clients. Every server is stopped in a `finally`."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner, Result

from qapten.api.auth import TokenBook
from qapten.api.settings import ApiSettings
from qapten.cli import app
from qapten.client import ClientError, QaptenClient
from qapten.testing import delegate, deliver, use

from .conftest import ORG
from .servers import free_port, running_server

runner = CliRunner()
SCRIPT = {
    "ceo": [delegate(cto="Write the plan", marketcom="Draft the post")],
    "cto": [use("workspace.write_file", path="plan.md", content="v1")],
    "marketcom": [deliver("post drafted")],
}
SERVE_TIMEOUT = 30.0


def clean_env() -> dict[str, str]:
    """This process's environment without the developer's own QAPTEN_ settings (tokens, URL)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("QAPTEN_")}


def qapten(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qapten.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=clean_env(),
    )


@dataclass(frozen=True)
class Served:
    url: str
    log: Path

    @property
    def output(self) -> str:
        return self.log.read_text(encoding="utf-8")


@contextmanager
def serving(tmp_path: Path, data_dir: Path, *extra: str) -> Iterator[Served]:
    """`qapten serve` on the default chart with the scripted model, until /healthz answers."""
    script = tmp_path / "script.json"
    script.write_text(json.dumps(SCRIPT), encoding="utf-8")
    log = tmp_path / f"serve-{len(list(tmp_path.glob('serve-*.log')))}.log"  # one per start

    def command(port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "qapten.cli",
            "serve",
            str(ORG),
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--model",
            f"scripted:{script}",
            *extra,
        ]

    with running_server(
        command, log=log, env=clean_env(), cwd=tmp_path, timeout=SERVE_TIMEOUT
    ) as url:
        yield Served(url=url, log=log)


def authorized(url: str, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{url}/api/v1/runs", headers=headers, timeout=5).status_code


def cli(*args: str, token: str = "") -> Result:
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("QAPTEN_")}
    result = runner.invoke(app, list(args), env={**unset, "QAPTEN_TOKEN": token})
    assert "Traceback" not in result.output
    assert result.exc_info is None or result.exc_info[0] is SystemExit, result.exc_info
    return result


def wait_for_pending(url: str, token: str, count: int) -> list[dict[str, Any]]:
    """`qapten inbox --json` until it lists `count` proposals (runs advance in the background)."""
    deadline = time.monotonic() + 10
    while True:
        pending: list[dict[str, Any]] = json.loads(
            cli("inbox", "--url", url, "--json", token=token).stdout
        )
        if len(pending) >= count:
            return pending
        assert time.monotonic() < deadline, f"{len(pending)} proposals, not {count}"
        time.sleep(0.1)


def one_error_line(result: Result) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.slow
def test_first_start_makes_an_admin_token_shown_once_and_kept(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    token_file = data_dir / "admin-token"
    with serving(tmp_path, data_dir) as server:
        token = token_file.read_text(encoding="utf-8").strip()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        lines = server.output.splitlines()
        assert lines[0] == f"Qapten serving Brightness (4 roles) on {server.url}/"
        assert lines[1] == f"admin token (shown once; kept in {token_file}): {token}"
        assert lines[2] == f"inbox: {server.url}/#token={token}"
        assert server.output.count(token) == 2
        assert authorized(server.url, token) == 200
        assert authorized(server.url, "guess") == 401

    with serving(tmp_path, data_dir) as server:
        assert token not in server.output
        assert f"admin token: in {token_file}" in server.output.splitlines()
        assert token_file.read_text(encoding="utf-8").strip() == token
        assert authorized(server.url, token) == 200


def test_a_public_address_without_tokens_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    refused = qapten("serve", str(ORG), "--host", "0.0.0.0", "--data-dir", str(data_dir))

    assert refused.returncode == 2
    assert refused.stdout == ""
    assert refused.stderr.startswith("error: refusing to listen on 0.0.0.0 without configured")
    assert len(refused.stderr.splitlines()) == 1
    assert not data_dir.exists()  # nothing made, no token written


def test_serve_mistakes_are_one_line_each_and_write_nothing(tmp_path: Path) -> None:
    bad_settings = tmp_path / "settings.yaml"
    bad_settings.write_text("tokens: [{name: bob}]\n", encoding="utf-8")
    cases = {
        ("--model", "gpt"): "error: --model gpt: unknown model provider 'gpt'",
        ("--model", "scripted:missing.json"): "error: --model scripted:missing.json: scripted",
        ("--base-url", "http://127.0.0.1:9"): "error: --base-url needs --model openai:NAME",
        ("--settings", str(bad_settings)): f"error: settings from {bad_settings}: tokens.0.sha256",
        ("--db", "nonsense"): "error: --db 'nonsense' is not a database URL",
    }
    for args, start in cases.items():
        out = cli("serve", str(ORG), "--data-dir", str(tmp_path / "data"), *args)
        assert out.exit_code == 2, (args, out.stderr)
        assert one_error_line(out).startswith(start), args
    assert not (tmp_path / "data").exists()  # checked before anything is made


@pytest.mark.slow
def test_inbox_and_decide_against_a_running_server(tmp_path: Path) -> None:
    with serving(tmp_path, tmp_path / "data") as server:
        token = (tmp_path / "data" / "admin-token").read_text(encoding="utf-8").strip()
        assert cli("inbox", "--url", server.url, token=token).stdout == "no pending proposals\n"
        started = httpx.post(
            f"{server.url}/api/v1/runs",
            json={"mission": "Launch the coaching app"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        assert started.status_code == 201
        run_id = started.json()["id"]

        [plan] = wait_for_pending(server.url, token, 1)
        assert (plan["role"], plan["kind"], plan["run_id"]) == ("ceo", "plan", run_id)

        table = cli("inbox", "--url", server.url, token=token)
        assert table.exit_code == 0
        row = next(line for line in table.stdout.splitlines() if plan["id"] in line)
        for cell in ("ceo", "plan", plan["title"], run_id):
            assert cell in row

        answer = cli(
            "decide", plan["id"], "answer", "--feedback", "x", "--url", server.url, token=token
        )
        assert answer.exit_code == 2
        assert (
            one_error_line(answer)
            == "error: a plan proposal takes approve, edit, reject, revise; not 'answer'"
        )

        approved = cli("decide", plan["id"], "approve", "--url", server.url, token=token)
        assert approved.exit_code == 0 and approved.stdout == "approved by admin\n"
        again = cli("decide", plan["id"], "reject", "--url", server.url, token=token)
        assert again.exit_code == 1
        assert one_error_line(again) == "error: already approved by admin"

        reports = wait_for_pending(server.url, token, 2)
        assert sorted(p["role"] for p in reports) == ["cto", "marketcom"]
        created = [p["created_at"] for p in reports]
        assert created == sorted(created, reverse=True)  # newest first
        lines = cli("inbox", "--url", server.url, token=token).stdout.splitlines()
        in_table = [p["id"] for line in lines for p in reports if p["id"] in line]
        assert in_table == [p["id"] for p in reports]

        bad_token = cli("inbox", "--url", server.url, token="guess")
        assert bad_token.exit_code == 2
        assert "refused the token" in one_error_line(bad_token)
        no_token = cli("inbox", "--url", server.url)
        assert no_token.exit_code == 2
        assert one_error_line(no_token).startswith("error: no token: set QAPTEN_TOKEN")


def test_client_errors_are_one_line_without_a_server() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    unreachable = cli("inbox", "--url", url, token="t")
    assert unreachable.exit_code == 1
    assert one_error_line(unreachable).startswith(f"error: cannot connect to {url}")

    bad_payload = cli("decide", "p_1", "edit", "--payload", "{oops", "--url", url, token="t")
    assert bad_payload.exit_code == 2
    assert one_error_line(bad_payload).startswith("error: --payload is not valid JSON")
    not_an_object = cli("decide", "p_1", "edit", "--payload", "[1]", "--url", url, token="t")
    assert not_an_object.exit_code == 2
    assert (
        one_error_line(not_an_object) == "error: --payload must be a JSON object ({...}), not list"
    )


@pytest.mark.slow
def test_token_prints_a_settings_entry_the_server_accepts(tmp_path: Path) -> None:
    made = cli("token", "--name", "maria", "--scope", "approver", "--roles", "marketcom, support")
    assert made.exit_code == 0
    first, hint, *snippet = made.stdout.splitlines()
    token = first.rsplit(": ", 1)[1]
    assert first == f"token (shown once, give it to maria): {token}"
    assert "--settings" in hint
    settings_file = tmp_path / "settings.yaml"
    settings_file.write_text("\n".join(snippet) + "\n", encoding="utf-8")

    [spec] = ApiSettings.load(settings_file).all_tokens()
    assert (spec.name, spec.scope, spec.roles) == ("maria", "approver", ("marketcom", "support"))
    principal = TokenBook([spec]).principal(token)
    assert principal is not None and principal.can_decide("support")
    assert token not in yaml.safe_dump(yaml.safe_load(settings_file.read_text(encoding="utf-8")))

    wrong = cli("token", "--scope", "viewer", "--roles", "cto")
    assert wrong.exit_code == 2
    assert one_error_line(wrong).startswith("error: --roles")

    # With tokens configured, serve makes no admin token and takes the printed one.
    data_dir = tmp_path / "data"
    with serving(tmp_path, data_dir, "--settings", str(settings_file)) as server:
        assert not (data_dir / "admin-token").exists()
        printed = [line for line in server.output.splitlines() if not line.startswith("INFO")]
        assert printed == [f"Qapten serving Brightness (4 roles) on {server.url}/"]
        assert authorized(server.url, token) == 200


def test_client_reads_every_page_and_spots_other_servers() -> None:
    proposal = {
        "run_id": "r_1",
        "role": "ceo",
        "kind": "plan",
        "title": "Delegate",
        "status": "pending",
        "created_at": "2026-01-01T00:00:00Z",
    }
    seen: list[httpx.Request] = []

    def two_pages(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if "cursor" not in request.url.params:
            return httpx.Response(
                200, json={"items": [{**proposal, "id": "p_2"}], "next_cursor": "c"}
            )
        return httpx.Response(200, json={"items": [{**proposal, "id": "p_1"}], "next_cursor": None})

    with QaptenClient("http://qapten", "t", transport=httpx.MockTransport(two_pages)) as client:
        assert [p.id for p in client.pending()] == ["p_2", "p_1"]
    assert [r.url.params.get("cursor") for r in seen] == [None, "c"]
    assert all(r.headers["Authorization"] == "Bearer t" for r in seen)

    def not_qapten(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, text="<html>nothing here</html>")

    with (
        QaptenClient("http://other", "t", transport=httpx.MockTransport(not_qapten)) as client,
        pytest.raises(ClientError, match="does not look like a Qapten server"),
    ):
        client.pending()
