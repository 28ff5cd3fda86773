"""Races over HTTP against a real server: many approvers at once, a decision against a cancel,
two retries at once. Exactly one side wins each time, and the losers are told who won."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from qapten.api.settings import token_digest
from qapten.testing import delegate, deliver, use

from ..conftest import write_org
from .conftest import HEADERS, ServerFactory
from .test_http_mission import EFFECT_TOOL, cto_uses_effects, wait_for_pending, wait_for_status

APPROVERS = [f"approver{i}" for i in range(10)]


def _tokens_env() -> dict[str, str]:
    tokens = [
        {"name": name, "sha256": token_digest(f"token-{name}"), "scope": "approver"}
        for name in APPROVERS
    ]
    return {"QAPTEN_TOKENS": json.dumps(tokens)}


def _auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer token-{name}"}


def _deploy_script() -> dict[str, Any]:
    return {
        "ceo": [delegate(cto="Deploy"), deliver("shipped")],
        "cto": [use(EFFECT_TOOL, text="deploy"), deliver("deployed")],
    }


async def _pending_action(client: httpx.AsyncClient, api: str, server: Any) -> tuple[str, str]:
    run_id = (await client.post(f"{api}/runs", json={"mission": "Ship"})).json()["id"]
    plan = await wait_for_pending(client, server, run_id)
    await client.post(f"{api}/proposals/{plan['id']}/decision", json={"decision": "approve"})
    action = await wait_for_pending(client, server, run_id)
    assert action["act"] == EFFECT_TOOL
    return run_id, action["id"]


async def test_fifty_mixed_decisions_from_ten_approvers_one_winner_named(
    serve: ServerFactory, tmp_path: Path
) -> None:
    org = write_org(tmp_path / "org", cto_uses_effects)
    server = serve(_deploy_script(), org=org, env=_tokens_env())
    async with httpx.AsyncClient(headers=HEADERS, timeout=30) as client:
        run_id, action = await _pending_action(client, server.api, server)
        url = f"{server.api}/proposals/{action}/decision"
        bodies = [
            {"decision": "approve"} if i % 2 else {"decision": "reject", "feedback": "no"}
            for i in range(50)
        ]
        replies = await asyncio.gather(
            *(
                client.post(url, json=body, headers=_auth(APPROVERS[i % 10]))
                for i, body in enumerate(bodies)
            )
        )
        codes = sorted(r.status_code for r in replies)
        assert codes == [200] + [409] * 49
        [won] = [r.json() for r in replies if r.status_code == 200]
        losers = [r.json() for r in replies if r.status_code == 409]
        assert {loser["details"]["decided_by"] for loser in losers} == {won["decided_by"]}
        assert all(won["decided_by"] in loser["message"] for loser in losers)
        refused = (await client.get(f"{server.api}/runs/{run_id}/events")).json()["items"]
        assert sum(e["type"] == "decision.refused" for e in refused) >= 49
        if won["status"] == "approved":
            final = await wait_for_pending(client, server, run_id)
            await client.post(
                f"{server.api}/proposals/{final['id']}/decision", json={"decision": "approve"}
            )
            await wait_for_status(client, server, run_id, "done")
            assert server.effects.read_text() == "deploy\n"  # once, whoever won
        else:
            assert won["status"] == "rejected"
            assert not server.effects.exists() or server.effects.read_text() == ""


async def test_a_decision_racing_a_cancel_never_runs_after_the_cancel(
    serve: ServerFactory, tmp_path: Path
) -> None:
    org = write_org(tmp_path / "org", cto_uses_effects)
    for attempt in range(5):  # the race goes either way; both outcomes must be clean
        server = serve(_deploy_script(), org=org, env={"QAPTEN_TEST_ATTEMPT": str(attempt)})
        server.effects.unlink(missing_ok=True)  # each round starts with no effect applied
        async with httpx.AsyncClient(headers=HEADERS, timeout=30) as client:
            run_id, action = await _pending_action(client, server.api, server)
            decided, cancelled = await asyncio.gather(
                client.post(
                    f"{server.api}/proposals/{action}/decision", json={"decision": "approve"}
                ),
                client.post(f"{server.api}/runs/{run_id}/cancel"),
            )
            assert cancelled.status_code == 200
            assert decided.status_code in (200, 409), decided.text
            await asyncio.sleep(0.3)  # let a step that was already going finish
            run = (await client.get(f"{server.api}/runs/{run_id}")).json()
            proposal = (await client.get(f"{server.api}/proposals/{action}")).json()
            assert run["status"] == "cancelled"
            if decided.status_code == 409:
                assert proposal["status"] == "cancelled"
                assert not server.effects.exists()
            else:
                assert proposal["status"] == "approved"
                effects = server.effects.read_text() if server.effects.exists() else ""
                assert effects in ("", "deploy\n")  # at most once, and only if it began first
            assert [p for p in run["proposals"] if p["status"] == "pending"] == []


async def test_two_retries_at_once_advance_the_run_once(
    serve: ServerFactory, tmp_path: Path
) -> None:
    script = {"ceo": ["prose, not an act", "more prose", "still prose", deliver("done at last")]}
    server = serve(script)
    async with httpx.AsyncClient(headers=HEADERS, timeout=30) as client:
        run_id = (await client.post(f"{server.api}/runs", json={"mission": "Try"})).json()["id"]
        await wait_for_status(client, server, run_id, "failed")
        url = f"{server.api}/runs/{run_id}/retry"
        first, second = await asyncio.gather(client.post(url), client.post(url))
        assert sorted([first.status_code, second.status_code]) == [200, 409]
        loser = first if first.status_code == 409 else second
        assert loser.json()["code"] == "not_retryable"
        final = await wait_for_pending(client, server, run_id)  # the CEO's deliverable
        await client.post(
            f"{server.api}/proposals/{final['id']}/decision", json={"decision": "approve"}
        )
        await wait_for_status(client, server, run_id, "done")
        events = (await client.get(f"{server.api}/runs/{run_id}/events")).json()["items"]
        assert sum(e["type"] == "run.retried" for e in events) == 1
        assert sum(e["type"] == "task.done" for e in events) == 1
