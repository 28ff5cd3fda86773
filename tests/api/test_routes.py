"""The JSON API in-process: statuses, error bodies, the auth matrix, mounting in a host app."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from qapten import Swarm
from qapten.api import ApiSettings, router

from .conftest import TOKENS, auth

ADMIN, VIEWER, MARKETCOM = auth("admin-token"), auth("viewer-token"), auth("mc-token")


async def start_and_approve_plan(client: httpx.AsyncClient, swarm: Swarm) -> str:
    created = await client.post("/api/v1/runs", json={"mission": "Launch"}, headers=ADMIN)
    assert created.status_code == 201
    run_id = created.json()["id"]
    [plan] = await swarm.pending(run_id)
    decided = await client.post(
        f"/api/v1/proposals/{plan.id}/decision", json={"decision": "approve"}, headers=ADMIN
    )
    assert decided.status_code == 200 and decided.json()["decided_by"] == "alice"
    await swarm.pending(run_id)
    return str(run_id)


async def test_auth_matrix_and_refusals_are_events(client: httpx.AsyncClient, swarm: Swarm) -> None:
    assert (await client.get("/api/v1/runs")).status_code == 401
    bad = await client.get("/api/v1/runs", headers=auth("nope"))
    assert bad.status_code == 401 and bad.json()["code"] == "unauthorized"
    assert (
        await client.post("/api/v1/runs", json={"mission": "x"}, headers=VIEWER)
    ).status_code == 403

    run_id = await start_and_approve_plan(client, swarm)
    pending = (
        await client.get("/api/v1/proposals", params={"status": "pending"}, headers=VIEWER)
    ).json()["items"]
    by_role = {p["role"]: p for p in pending}
    assert set(by_role) == {"cto", "marketcom"}

    url = "/api/v1/proposals/{}/decision"
    approve = {"decision": "approve"}
    viewer = await client.post(url.format(by_role["cto"]["id"]), json=approve, headers=VIEWER)
    assert viewer.status_code == 403 and viewer.json()["code"] == "forbidden"
    wrong_role = await client.post(
        url.format(by_role["cto"]["id"]), json=approve, headers=MARKETCOM
    )
    assert wrong_role.status_code == 403
    assert "may not decide cto proposals" in wrong_role.json()["message"]
    ok = await client.post(url.format(by_role["marketcom"]["id"]), json=approve, headers=MARKETCOM)
    assert ok.status_code == 200 and ok.json()["decided_by"] == "maria"

    again = await client.post(url.format(by_role["marketcom"]["id"]), json=approve, headers=ADMIN)
    assert again.status_code == 409
    assert again.json()["details"] == {"status": "approved", "decided_by": "maria"}

    refused = [e for e in await swarm.events() if e.type in ("access.refused", "decision.refused")]
    assert [e.data.get("status", 409) for e in refused] == [401, 401, 403, 403, 403, 409]
    assert (await client.get(f"/api/v1/runs/{run_id}", headers=VIEWER)).status_code == 200


async def test_errors_are_json_with_a_stable_code(client: httpx.AsyncClient, swarm: Swarm) -> None:
    missing = await client.get("/api/v1/proposals/p_nope", headers=ADMIN)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert (await client.get("/api/v1/runs/r_nope", headers=ADMIN)).status_code == 404
    blank = await client.post("/api/v1/runs", json={"mission": ""}, headers=ADMIN)
    assert blank.status_code == 422 and blank.json()["code"] == "invalid_request"
    assert "mission" in blank.json()["message"]
    bad_cursor = await client.get("/api/v1/runs", params={"cursor": "zzz"}, headers=ADMIN)
    assert bad_cursor.status_code == 422

    await start_and_approve_plan(client, swarm)
    [cto] = [p for p in await swarm.pending() if p.role == "cto"]
    url = f"/api/v1/proposals/{cto.id}/decision"
    edit = await client.post(
        url, json={"decision": "edit", "payload": {"path": "plan.md"}}, headers=ADMIN
    )
    assert edit.status_code == 422 and edit.json()["code"] == "invalid_decision"
    assert "content: Field required" in edit.json()["message"]
    revise = await client.post(url, json={"decision": "revise"}, headers=ADMIN)
    assert revise.status_code == 422 and "needs 'feedback'" in revise.json()["message"]


async def test_run_detail_and_pagination(client: httpx.AsyncClient, swarm: Swarm) -> None:
    run_id = await start_and_approve_plan(client, swarm)
    detail = (await client.get(f"/api/v1/runs/{run_id}", headers=ADMIN)).json()
    assert [t["role"] for t in detail["tasks"]] == ["ceo", "cto", "marketcom"]
    assert detail["tokens"]["ceo"] > 0
    assert len(detail["proposals"]) == 3

    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/v1/proposals", params=params, headers=ADMIN)).json()
        seen += [p["id"] for p in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    newest_first = [
        p.id
        for p in sorted(
            await swarm.store.list_proposals(), key=lambda p: (p.created_at, p.id), reverse=True
        )
    ]
    assert seen == newest_first

    events = (
        await client.get(f"/api/v1/runs/{run_id}/events", params={"after": 0}, headers=ADMIN)
    ).json()["items"]
    assert events[0]["type"] == "run.started"
    ids = [e["id"] for e in events]
    assert ids == sorted(ids)
    later = (await client.get("/api/v1/events", params={"after": ids[2]}, headers=ADMIN)).json()
    assert [e["id"] for e in later["items"]] == ids[3:]


async def test_router_mounts_under_a_prefix_in_a_host_app(swarm: Swarm) -> None:
    host = FastAPI()

    @host.get("/")
    async def home() -> dict[str, str]:
        return {"app": "host"}

    host.include_router(router(swarm, ApiSettings(tokens=tuple(TOKENS.values()))), prefix="/ops")
    transport = httpx.ASGITransport(app=host)
    async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
        assert (await client.get("/")).json() == {"app": "host"}
        org = await client.get("/ops/org", headers=ADMIN)
        assert org.status_code == 200 and org.json()["root"] == "ceo"
        assert (await client.get("/ops/healthz")).json() == {"status": "ok"}
        assert (await client.get("/ops/org")).status_code == 401
        created = await client.post("/ops/runs", json={"mission": "Hosted"}, headers=ADMIN)
        assert created.status_code == 201
