"""End to end against a real uvicorn process: a mission decided entirely over HTTP, followed
live over SSE with a reconnect, and 50 concurrent decisions on one proposal."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse

from qapten.testing import ask, delegate, deliver, use

from ..conftest import write_org
from .conftest import HEADERS, Server, ServerFactory

EFFECT_TOOL = "tests.e2e.server:append_effect"


def cto_uses_effects(data: dict[str, Any]) -> None:
    data["roles"]["cto"]["tools"] = [EFFECT_TOOL]


def mission_script() -> dict[str, Any]:
    return {
        "ceo": [
            delegate(cto="Deploy", marketcom="Announce", support="Staff support"),
            deliver("Deployed v2, announced, support staffed."),
        ],
        "cto": [
            use(EFFECT_TOOL, text="deploy v1"),
            use(EFFECT_TOOL, text="deploy v2"),
            deliver("v2 is live"),
        ],
        "marketcom": [deliver("Draft post")],
        "support": [ask("Which hours?"), deliver("Support 9-17")],
    }


def decision_for(proposal: dict[str, Any]) -> dict[str, Any]:
    """The human: rejects deploying v1, edits the post, answers the question, approves the rest."""
    if proposal["act"] == EFFECT_TOOL and proposal["payload"]["text"] == "deploy v1":
        return {"decision": "reject", "feedback": "v1 has a known bug: deploy v2"}
    if proposal["role"] == "marketcom" and proposal["kind"] == "deliverable":
        return {"decision": "edit", "payload": {"result": "Edited launch post"}}
    if proposal["kind"] == "question":
        return {"decision": "answer", "feedback": "9-17 CET"}
    return {"decision": "approve"}


async def follow(
    client: httpx.AsyncClient,
    server: Server,
    received: list[dict[str, Any]],
    *,
    stop_after: int | None,
    last_id: str | None,
) -> str | None:
    """Read the SSE stream until `stop_after` events (then drop the connection) or run.done."""
    headers = {**HEADERS, "Accept": "text/event-stream"}
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    async with aconnect_sse(client, "GET", f"{server.api}/events", headers=headers) as source:
        async for sse in source.aiter_sse():
            if not sse.data:  # the keep-alive comment, every 15 s: no event of the log
                continue
            received.append({"id": int(sse.id), "type": sse.event, **json.loads(sse.data)})
            last_id = sse.id
            if sse.event == "run.done" or (stop_after and len(received) >= stop_after):
                return last_id
    return last_id


@pytest.mark.slow
async def test_a_mission_decided_over_http_and_followed_over_sse(
    serve: ServerFactory, tmp_path: Path
) -> None:
    server = serve(mission_script(), org=write_org(tmp_path / "org", cto_uses_effects))
    received: list[dict[str, Any]] = []
    async with httpx.AsyncClient(headers=HEADERS, timeout=10) as client:
        # Follow the stream from the start, drop it after 3 events, reconnect later.
        first_leg = asyncio.create_task(
            follow(client, server, received, stop_after=3, last_id=None)
        )
        created = await client.post(f"{server.api}/runs", json={"mission": "Launch v2"})
        assert created.status_code == 201
        run_id = created.json()["id"]
        last_id = await asyncio.wait_for(first_leg, 10)

        statuses: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            run = (await client.get(f"{server.api}/runs/{run_id}")).json()
            if run["status"] in ("done", "failed"):
                break
            page = await client.get(
                f"{server.api}/proposals", params={"status": "pending", "run_id": run_id}
            )
            for proposal in page.json()["items"]:
                answer = await client.post(
                    f"{server.api}/proposals/{proposal['id']}/decision", json=decision_for(proposal)
                )
                assert answer.status_code == 200, answer.text
                statuses.append(answer.json()["status"])
            await asyncio.sleep(0.05)
        assert run["status"] == "done", run
        assert run["result"] == "Deployed v2, announced, support staffed."
        assert sorted(set(statuses)) == ["answered", "approved", "edited", "rejected"]
        assert server.effects.read_text() == "deploy v2\n"  # the rejected v1 never ran
        tasks = {t["role"]: t for t in run["tasks"]}
        assert tasks["marketcom"]["result"] == "Edited launch post"

        # Reconnect with Last-Event-ID: together the two legs are the whole log, once each.
        await asyncio.wait_for(
            follow(client, server, received, stop_after=None, last_id=last_id), 10
        )
        log = await client.get(f"{server.api}/events", params={"after": 0, "limit": 1000})
        all_ids = [e["id"] for e in log.json()["items"]]
        streamed = [e["id"] for e in received]
        assert streamed == all_ids[: len(streamed)]
        assert len(streamed) == len(set(streamed))
        assert received[-1]["type"] == "run.done"


@pytest.mark.slow
async def test_fifty_concurrent_decisions_one_winner_one_effect(
    serve: ServerFactory, tmp_path: Path
) -> None:
    script = {
        "ceo": [delegate(cto="Deploy"), deliver("shipped")],
        "cto": [use(EFFECT_TOOL, text="deploy"), deliver("deployed")],
    }
    server = serve(script, org=write_org(tmp_path / "org", cto_uses_effects))
    async with httpx.AsyncClient(headers=HEADERS, timeout=20) as client:
        run_id = (await client.post(f"{server.api}/runs", json={"mission": "Ship"})).json()["id"]
        plan = await wait_for_pending(client, server, run_id)
        await client.post(
            f"{server.api}/proposals/{plan['id']}/decision", json={"decision": "approve"}
        )
        action = await wait_for_pending(client, server, run_id)
        assert action["act"] == EFFECT_TOOL
        url = f"{server.api}/proposals/{action['id']}/decision"
        replies = await asyncio.gather(
            *(client.post(url, json={"decision": "approve"}) for _ in range(50))
        )
        codes = sorted(r.status_code for r in replies)
        assert codes == [200] + [409] * 49
        assert {r.json()["details"]["decided_by"] for r in replies if r.status_code == 409} == {
            "admin"
        }
        final = await wait_for_pending(client, server, run_id)
        await client.post(
            f"{server.api}/proposals/{final['id']}/decision", json={"decision": "approve"}
        )
        await wait_for_status(client, server, run_id, "done")
    assert server.effects.read_text() == "deploy\n"


async def wait_for_pending(
    client: httpx.AsyncClient, server: Server, run_id: str
) -> dict[str, Any]:
    for _ in range(200):
        page = await client.get(
            f"{server.api}/proposals", params={"status": "pending", "run_id": run_id}
        )
        if items := page.json()["items"]:
            return dict(items[0])
        await asyncio.sleep(0.05)
    raise AssertionError(f"no pending proposal in run {run_id}")


async def wait_for_status(
    client: httpx.AsyncClient, server: Server, run_id: str, status: str
) -> None:
    for _ in range(200):
        if (await client.get(f"{server.api}/runs/{run_id}")).json()["status"] == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} did not reach {status}")
