"""Acts that need M of N named approvers: each approver counts once, one reject ends it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from qapten import Edit, InvalidDecision, ProposalAlreadyDecided, Reject, Revise, Swarm
from qapten.api import ApiSettings, create_app
from qapten.api.settings import TokenSpec, token_digest
from qapten.errors import OrgChartError
from qapten.orgchart import OrgChart
from qapten.proposals import AlreadyApproved, NotAnApprover, Proposal
from qapten.testing import ScriptedChatModel, delegate, deliver, use

from .conftest import ORG, SwarmFactory, write_org
from .test_deadlines import chart_text

APPROVERS = ["alice", "bob", "carol"]


def two_of_three(data: dict[str, Any]) -> None:
    """The default chart where the CEO plans and delivers alone and every file the CTO writes
    needs 2 of alice, bob and carol."""
    data["roles"]["ceo"]["autonomy"] = {"plan": "auto", "deliverable": "auto"}
    data["roles"]["cto"]["quorum"] = {
        "workspace.write_file": {"required": 2, "approvers": APPROVERS}
    }


def cto_deploys() -> ScriptedChatModel:
    return ScriptedChatModel(
        {
            "ceo": [delegate(cto="Deploy"), deliver("all done")],
            "cto": [
                use("workspace.write_file", path="deploy.log", content="deployed"),
                deliver("done"),
            ],
        }
    )


@pytest.fixture
def org(tmp_path: Path) -> Path:
    return write_org(tmp_path / "org", two_of_three)


async def pending_deploy(swarm: Swarm) -> Proposal:
    run = await swarm.start("Deploy the release")
    [deploy] = await swarm.pending(run.id)
    assert deploy.quorum is not None and deploy.quorum.required == 2
    return deploy


async def test_two_of_three_distinct_approvers_run_it_exactly_once(
    make_swarm: SwarmFactory, org: Path
) -> None:
    swarm = make_swarm(cto_deploys(), org=org)
    deploy = await pending_deploy(swarm)

    first = await swarm.decide(deploy.id, "approve", by="alice")
    assert first.status == "pending"
    assert [a.by for a in first.approvals] == ["alice"]
    with pytest.raises(AlreadyApproved, match=r"alice approved proposal .* already \(1 of 2"):
        await swarm.decide(deploy.id, "approve", by="alice")
    with pytest.raises(NotAnApprover, match=r"dave is not an approver .* needs 2 of alice, bob"):
        await swarm.decide(deploy.id, "approve", by="dave")
    still = await swarm.proposal(deploy.id)
    assert (still.status, [a.by for a in still.approvals]) == ("pending", ["alice"])
    await swarm.idle(deploy.run_id)
    assert await swarm.tool_calls(deploy.run_id) == []  # one approval runs nothing

    second = await swarm.decide(deploy.id, "approve", by="carol")
    assert second.status == "approved" and second.decided_by == "alice, carol"
    assert second.approved_hash == deploy.payload_hash
    await swarm.wait(deploy.run_id, timeout=10)
    [call] = await swarm.tool_calls(deploy.run_id)  # executed exactly once
    assert (call.call_id, call.status) == (deploy.id, "done")
    with pytest.raises(ProposalAlreadyDecided, match="already approved by alice, carol"):
        await swarm.decide(deploy.id, "approve", by="bob")
    events = await swarm.events(deploy.run_id)
    refused = [e.data["reason"] for e in events if e.type == "decision.refused"]
    assert refused == ["approved already", "already approved"]  # alice twice, bob too late
    recorded = [e.data for e in events if e.type == "approval.recorded"]
    assert [(e["by"], e["approvals"], e["required"]) for e in recorded] == [
        ("alice", 1, 2),
        ("carol", 2, 2),
    ]


@pytest.mark.parametrize("no", [Reject(feedback="not on a Friday"), Revise(feedback="Monday")])
async def test_one_reject_by_an_approver_ends_it(
    make_swarm: SwarmFactory, org: Path, no: Reject | Revise
) -> None:
    model = cto_deploys()
    swarm = make_swarm(model, org=org)
    deploy = await pending_deploy(swarm)
    await swarm.decide(deploy.id, "approve", by="alice")
    with pytest.raises(NotAnApprover):
        await swarm.decide(deploy.id, no, by="mallory")  # nor may others say no
    ended = await swarm.decide(deploy.id, no, by="bob")
    assert ended.status in ("rejected", "revision_requested") and ended.decided_by == "bob"
    with pytest.raises(ProposalAlreadyDecided):
        await swarm.decide(deploy.id, "approve", by="carol")
    await swarm.wait(deploy.run_id, timeout=10)
    assert await swarm.tool_calls(deploy.run_id) == []


async def test_an_act_with_a_quorum_cannot_be_edited(make_swarm: SwarmFactory, org: Path) -> None:
    swarm = make_swarm(cto_deploys(), org=org)
    deploy = await pending_deploy(swarm)
    edit = Edit(payload={"path": "deploy.log", "content": "something else"})
    with pytest.raises(InvalidDecision, match="needs 2 approvals, so it cannot be edited"):
        await swarm.decide(deploy.id, edit, by="alice")
    assert (await swarm.proposal(deploy.id)).status == "pending"


async def test_approvals_at_once_each_count_once_and_it_runs_once(
    make_swarm: SwarmFactory, org: Path
) -> None:
    swarm = make_swarm(cto_deploys(), org=org)
    deploy = await pending_deploy(swarm)
    deciders = ["alice", "alice", "bob", "carol", "bob"]
    results = await asyncio.gather(
        *(swarm.decide(deploy.id, "approve", by=name) for name in deciders),
        return_exceptions=True,
    )
    final = await swarm.proposal(deploy.id)
    assert final.status == "approved"
    assert len(final.approvals) == 2 and len({a.by for a in final.approvals}) == 2
    approved = [r for r in results if not isinstance(r, BaseException)]
    assert sum(p.status == "approved" for p in approved) == 1  # one call completed the quorum
    refused = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, AlreadyApproved | ProposalAlreadyDecided) for r in refused), refused
    await swarm.wait(deploy.run_id, timeout=10)
    assert len(await swarm.tool_calls(deploy.run_id)) == 1


async def test_over_http_approvers_are_named_counted_once_and_shown(
    make_swarm: SwarmFactory, org: Path
) -> None:
    swarm = make_swarm(cto_deploys(), org=org)
    tokens = [
        TokenSpec(name=name, sha256=token_digest(f"{name}-token"), scope="approver")
        for name in [*APPROVERS, "dave"]
    ]
    app = create_app(swarm, ApiSettings(tokens=tuple(tokens)))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://qapten"
    ) as client:
        deploy = await pending_deploy(swarm)
        url = f"/api/v1/proposals/{deploy.id}/decision"

        async def decide(who: str, decision: str = "approve") -> httpx.Response:
            headers = {"Authorization": f"Bearer {who}-token"}
            return await client.post(url, json={"decision": decision}, headers=headers)

        refused = await decide("dave")
        assert refused.status_code == 403, refused.text
        assert "dave (approver) is not an approver" in refused.json()["message"]

        recorded = await decide("alice")
        assert recorded.status_code == 200, recorded.text
        body = recorded.json()
        assert body["status"] == "pending"
        assert body["quorum"] == {"required": 2, "approvers": APPROVERS}
        assert [a["by"] for a in body["approvals"]] == ["alice"]

        again = await decide("alice")
        assert again.status_code == 409, again.text
        assert again.json()["code"] == "already_approved"
        assert again.json()["details"] == {"approvals": ["alice"]}

        edit = await client.post(
            url,
            json={"decision": "edit", "payload": {"path": "x", "content": "y"}},
            headers={"Authorization": "Bearer bob-token"},
        )
        assert edit.status_code == 422 and edit.json()["code"] == "invalid_decision"

        done = await decide("bob")
        assert done.status_code == 200
        assert (done.json()["status"], done.json()["decided_by"]) == ("approved", "alice, bob")
        late = await decide("carol")
        assert late.status_code == 409 and late.json()["code"] == "already_decided"
    await swarm.wait(deploy.run_id, timeout=10)
    assert len(await swarm.tool_calls(deploy.run_id)) == 1


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (
            "    quorum:\n"
            "      workspace.write_file: {required: 4, approvers: [alice, bob, carol]}\n",
            "43:40: roles.cto.quorum['workspace.write_file'].required: required (4) is more than "
            "the approvers named (3: alice, bob, carol)",
        ),
        (
            "    quorum:\n      action: {required: 2, approvers: [alice, bob, alice]}\n",
            "43:53: roles.cto.quorum.action.approvers[2]: approver 'alice' is listed twice",
        ),
        (
            "    quorum:\n      action: {required: 0, approvers: [alice]}\n",
            "43:26: roles.cto.quorum.action.required: input should be greater than or equal to 1",
        ),
        (
            "    quorum:\n      deploy: {required: 1, approvers: [alice]}\n",
            "43:7: roles.cto.quorum.deploy: 'deploy' is neither plan, action, deliverable, "
            "budget nor a tool of role 'cto'",
        ),
        (
            "    quorum:\n      question: {required: 1, approvers: [alice]}\n",
            "43:7: roles.cto.quorum.question: a question is answered, not approved",
        ),
        (
            "    deadlines:\n      action: {expires_after: 1h, on_expiry: escalate}\n"
            "    quorum:\n      workspace.write_file: {required: 1, approvers: [alice]}\n",
            "45:7: roles.cto.quorum['workspace.write_file']: 'workspace.write_file' needs a "
            "quorum, so only its named approvers decide it: its deadline cannot escalate",
        ),
    ],
)
def test_quorum_mistakes_are_located(extra: str, problem: str) -> None:
    with pytest.raises(OrgChartError) as caught:
        OrgChart.from_text(chart_text(extra), source="org.yaml", base_dir=ORG.parent)
    [found] = caught.value.problems
    assert str(found).startswith(f"org.yaml:{problem}"), str(found)
