"""GET /metrics: Prometheus text computed from the database, right after real decisions."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from qapten import Swarm
from qapten.api import ApiSettings, create_app
from qapten.store import tables as t
from qapten.testing import delegate, deliver, use

from ..conftest import SwarmFactory
from .conftest import TOKENS, auth

ADMIN = auth("admin-token")
SCRIPT: dict[str, list[Any]] = {
    "ceo": [
        delegate(cto="Write the plan", marketcom="Draft the post"),
        deliver("all done"),
        delegate(support="Staff support"),
        delegate(support="Staff support"),
    ],
    "cto": [
        use("workspace.write_file", path="plan.md", content="v1"),
        use("workspace.write_file", path="plan.md", content="v2"),
        deliver("plan ready"),  # deliverable: auto for the cto, decided by the policy
    ],
    "marketcom": [deliver("post drafted")],
}


def scrape(text: str) -> dict[str, Metric]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def values(family: Metric, suffix: str = "") -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for s in family.samples
        if s.name == family.name + suffix
    }


async def get_metrics(swarm: Swarm) -> dict[str, Metric]:
    app = create_app(swarm, ApiSettings(tokens=tuple(TOKENS.values())))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://qapten") as client:
        response = await client.get("/api/v1/metrics")  # no token: counts only
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return scrape(response.text)


async def decide(client: httpx.AsyncClient, proposal_id: str, **body: Any) -> None:
    response = await client.post(
        f"/api/v1/proposals/{proposal_id}/decision", json=body, headers=ADMIN
    )
    assert response.status_code == 200, response.text


async def play_three_runs(swarm: Swarm) -> None:
    """Run 1 done after five human decisions (one a rejection); run 2 cancelled with its plan
    pending; run 3 waiting on its plan."""
    app = create_app(swarm, ApiSettings(tokens=tuple(TOKENS.values())))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://qapten") as client:
        run1 = (await client.post("/api/v1/runs", json={"mission": "Launch"}, headers=ADMIN)).json()
        [plan] = await swarm.pending(run1["id"])
        await decide(client, plan.id, decision="approve")
        by_role = {p.role: p for p in await swarm.pending(run1["id"])}
        await decide(client, by_role["cto"].id, decision="reject", feedback="write v2")
        await decide(client, by_role["marketcom"].id, decision="approve")
        [write_v2] = await swarm.pending(run1["id"])
        await decide(client, write_v2.id, decision="approve")
        [synthesis] = await swarm.pending(run1["id"])
        await decide(client, synthesis.id, decision="approve")
        await swarm.wait(run1["id"], timeout=10)

        run2 = (await client.post("/api/v1/runs", json={"mission": "Hire"}, headers=ADMIN)).json()
        await swarm.pending(run2["id"])
        cancelled = await client.post(f"/api/v1/runs/{run2['id']}/cancel", headers=ADMIN)
        assert cancelled.status_code == 200
        run3 = (await client.post("/api/v1/runs", json={"mission": "Grow"}, headers=ADMIN)).json()
        await swarm.pending(run3["id"])
    await swarm.idle()


async def test_metrics_count_what_the_database_holds(make_swarm: SwarmFactory) -> None:
    swarm = make_swarm(SCRIPT)
    await swarm.open()
    await play_three_runs(swarm)
    # Known latencies for two decisions, to check the buckets: 90 s and exactly 2 h.
    decided = await swarm.store.list_proposals()
    human = [p for p in decided if p.decided_by == "alice" and p.status != "cancelled"]
    for proposal, seconds in zip(human[:2], (90, 7200), strict=True):
        decided_at = proposal.created_at + timedelta(seconds=seconds)
        change = (
            update(t.proposals).where(t.proposals.c.id == proposal.id).values(decided_at=decided_at)
        )
        await swarm.store.write(lambda conn, change=change: conn.execute(change))

    metrics = await get_metrics(swarm)

    runs = values(metrics["qapten_runs"])
    assert runs == {
        (("status", "cancelled"),): 1,
        (("status", "done"),): 1,
        (("status", "failed"),): 0,
        (("status", "running"),): 0,
        (("status", "waiting"),): 1,
    }
    assert values(metrics["qapten_pending_proposals"]) == {(("kind", "plan"), ("role", "ceo")): 1}

    latency = metrics["qapten_decision_latency_seconds"]
    assert len(human) == 5  # plan, rejected write, approved write, post, synthesis
    # Also in the table, and not human decisions: the cancelled plan and the auto deliverable.
    assert [p.kind for p in decided if p.status == "cancelled"] == ["plan"]
    assert [p.role for p in decided if p.decided_by == "policy:auto"] == ["cto"]
    assert values(latency, "_count") == {(): 5}  # not the cancelled plan, not the auto deliverable
    buckets = {dict(labels)["le"]: n for labels, n in values(latency, "_bucket").items()}
    assert buckets["1.0"] == 3
    assert buckets["60.0"] == 3
    assert buckets["300.0"] == 4
    assert buckets["3600.0"] == 4
    assert buckets["7200.0"] == 5  # a bucket's bound is inclusive
    assert buckets["+Inf"] == 5
    [total] = values(latency, "_sum").values()
    assert 7290 <= total < 7293

    tokens = values(metrics["qapten_tokens"], "_total")
    events = await swarm.store.events(limit=100_000)
    # Worked out apart from the metrics' query: each proposal's event says what it cost.
    expected_tokens: dict[str, int] = {}
    for event in events:
        if event.type in ("proposal.created", "act.auto"):
            role = event.data["role"]
            expected_tokens[role] = expected_tokens.get(role, 0) + event.data["tokens"]
    assert tokens == {(("role", role),): n for role, n in expected_tokens.items()}
    assert set(expected_tokens) == {"ceo", "cto", "marketcom"}
    assert all(n > 0 for n in tokens.values())

    assert values(metrics["qapten_events"], "_total") == {(): len(events)}


async def test_metrics_survive_a_restart(make_swarm: SwarmFactory) -> None:
    first = make_swarm(SCRIPT)
    await first.open()
    await play_three_runs(first)
    before = await get_metrics(first)
    await first.close()

    again = make_swarm({})  # a new process on the same database: nothing in memory
    await again.open()
    after = await get_metrics(again)

    for name in ("qapten_runs", "qapten_pending_proposals", "qapten_tokens"):
        assert after[name].samples == before[name].samples
    assert values(after["qapten_decision_latency_seconds"], "_count") == {(): 5}
    # Reading metrics writes nothing: the event count is unchanged.
    assert after["qapten_events"].samples == before["qapten_events"].samples
