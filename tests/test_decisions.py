"""Decisions that do not fit, cancel, and the pieces a swarm is configured with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qapten import (
    Answer,
    Edit,
    InvalidDecision,
    Proposal,
    ProposalNotFound,
    ProposalStatus,
    RunFailed,
    ScriptExhausted,
    Swarm,
)
from qapten.testing import ScriptedChatModel, delegate, deliver, use

from .conftest import SwarmFactory, write_org


async def test_an_edit_must_fit_the_tool_schema(make_swarm: SwarmFactory) -> None:
    model = ScriptedChatModel(
        {
            "ceo": [delegate(cto="Write the plan"), deliver("ok")],
            "cto": [use("workspace.write_file", path="plan.md", content="x"), deliver("done")],
        }
    )
    swarm = make_swarm(model)
    run = await swarm.start("Plan")
    [plan] = await swarm.pending(run.id)
    with pytest.raises(InvalidDecision, match=r"tasks\.0\.to: 'support2' is not one of your"):
        await swarm.decide(plan.id, Edit(payload={"tasks": [{"to": "support2", "brief": "b"}]}))
    with pytest.raises(InvalidDecision, match="a plan proposal takes approve, edit, reject"):
        await swarm.decide(plan.id, Answer(text="yes"))
    with pytest.raises(InvalidDecision, match="needs details"):
        await swarm.decide(plan.id, "reject")
    await swarm.decide(plan.id, "approve")
    [action] = await swarm.pending(run.id)
    with pytest.raises(InvalidDecision, match="content: Field required"):
        await swarm.decide(action.id, Edit(payload={"path": "plan.md"}))
    with pytest.raises(InvalidDecision, match="mode: Extra inputs are not permitted"):
        await swarm.decide(action.id, Edit(payload={"path": "a", "content": "b", "mode": "x"}))
    assert (await swarm.proposal(action.id)).status == "pending"  # nothing changed
    with pytest.raises(ProposalNotFound):
        await swarm.decide("p_missing", "approve")


async def test_a_refusing_check_or_a_decision_that_does_not_fit_records_nothing(
    make_swarm: SwarmFactory,
) -> None:
    swarm = make_swarm(ScriptedChatModel({"ceo": [delegate(cto="x")]}))
    run = await swarm.start("Something")
    [plan] = await swarm.pending(run.id)
    before = await swarm.events(run.id)
    seen: list[Proposal] = []

    def refuse(proposal: Proposal) -> None:
        seen.append(proposal)
        raise PermissionError(f"not {proposal.role}'s business")

    # The decision is written and then undone: the check sees the row as it would be.
    with pytest.raises(PermissionError, match="not ceo's business"):
        await swarm.decide(plan.id, "approve", by="mallory", check=refuse)
    assert [(p.id, p.status, p.decided_payload) for p in seen] == [
        (plan.id, ProposalStatus.APPROVED, plan.payload)
    ]
    with pytest.raises(InvalidDecision, match="a plan proposal takes"):
        await swarm.decide(plan.id, Answer(text="yes"), check=lambda proposal: None)
    after = await swarm.proposal(plan.id)
    assert (after.status, after.decided_by, after.decided_payload) == ("pending", None, None)
    assert await swarm.events(run.id) == before
    assert (await swarm.runs("waiting"))[0].id == run.id

    approved = await swarm.decide(plan.id, "approve", by="alice", check=lambda proposal: None)
    assert (approved.decided_by, approved.decided_payload) == ("alice", plan.payload)
    assert approved.approved_hash == plan.payload_hash


async def test_cancel_stops_the_run_and_its_proposals(make_swarm: SwarmFactory) -> None:
    swarm = make_swarm(ScriptedChatModel({"ceo": [delegate(cto="x")]}))
    run = await swarm.start("Something")
    [plan] = await swarm.pending(run.id)
    cancelled = await swarm.cancel(run.id, by="alice")
    assert cancelled.status == "cancelled"
    assert (await swarm.proposal(plan.id)).status == "cancelled"
    with pytest.raises(RunFailed, match="cancelled by alice"):
        await swarm.wait(run.id, timeout=5)


async def test_running_out_of_script_fails_the_run_with_a_clear_reason(
    make_swarm: SwarmFactory,
) -> None:
    swarm = make_swarm(ScriptedChatModel({"ceo": []}))
    run = await swarm.start("Anything")
    with pytest.raises(RunFailed, match="no answer left for role 'ceo': call #1"):
        await swarm.wait(run.id, timeout=5)
    with pytest.raises(ScriptExhausted):
        await ScriptedChatModel([]).ainvoke("hello")


def yaml_tools_and_models(data: dict[str, Any]) -> None:
    data["roles"]["cto"]["tools"] = [
        "tests.sample_tools:shout",
        "tests.sample_tools:note_in_workspace",
    ]
    data["roles"]["cto"]["autonomy"] = {"action": "auto", "deliverable": "auto"}
    data["roles"]["cto"]["model"] = "scripted:cto-script.json"


async def test_yaml_names_module_tools_and_a_role_model(
    make_swarm: SwarmFactory, tmp_path: Path
) -> None:
    org = write_org(tmp_path / "org", yaml_tools_and_models)
    cto_script = [
        {"tool": "tests.sample_tools:shout", "args": {"text": "go", "times": 2}},
        {"tool": "tests.sample_tools:note_in_workspace", "args": {"name": "memo"}},
        {"tool": "deliver", "args": {"result": "shouted and noted"}},
    ]
    (tmp_path / "org" / "cto-script.json").write_text(json.dumps(cto_script))
    ceo = ScriptedChatModel({"ceo": [delegate(cto="Make noise"), deliver("ok")]})
    swarm = make_swarm(ceo, org=org)
    run = await swarm.start("Noise")
    [plan] = await swarm.pending(run.id)
    await swarm.decide(plan.id, "approve")
    [final] = await swarm.pending(run.id)
    assert "Result from cto (t1.1): shouted and noted" in ceo.calls_for("ceo")[1].prompt
    await swarm.decide(final.id, "approve")
    await swarm.wait(run.id, timeout=5)
    calls = await swarm.tool_calls(run.id)
    assert [(c.tool, c.result) for c in calls] == [
        ("tests.sample_tools:shout", "GO GO"),
        ("tests.sample_tools:note_in_workspace", "noted memo"),
    ]
    assert swarm.workspace(run.id).read_text("memo.txt") == calls[1].call_id
    assert ceo.calls_for("cto") == []  # the CTO ran on its own model from the YAML


async def test_a_payload_that_differs_from_the_approved_hash_never_runs(
    make_swarm: SwarmFactory,
) -> None:
    model = ScriptedChatModel(
        {
            "ceo": [delegate(cto="Write the plan"), deliver("ok")],
            "cto": [
                use("workspace.write_file", path="plan.md", content="safe"),
                deliver("gave up"),
            ],
        }
    )
    swarm = make_swarm(model)
    run = await swarm.start("Plan")
    [plan] = await swarm.pending(run.id)
    await swarm.decide(plan.id, "approve")
    [action] = await swarm.pending(run.id)
    # A tampered record: approved for the proposed payload, but another payload to execute.
    await swarm.store.decide(
        action.id,
        status=ProposalStatus.APPROVED,
        decided_by="mallory",
        decided_payload={"path": "plan.md", "content": "rm -rf /"},
        approved_hash=action.payload_hash,
    )
    await swarm.resume(run.id)
    [final] = await swarm.pending(run.id)
    await swarm.decide(final.id, "approve")
    await swarm.wait(run.id, timeout=5)
    assert await swarm.tool_calls(run.id) == []
    refused = [e for e in await swarm.events(run.id) if e.type == "act.refused"]
    assert refused[0].data == {
        "proposal_id": action.id,
        "reason": "payload does not match the approved hash",
    }
    assert "payload changed after approval" in model.calls_for("cto")[1].prompt


def chart_level_script(data: dict[str, Any]) -> None:
    data["model"] = "scripted:company-script.json"
    for role in data["roles"].values():
        role["autonomy"] = {"plan": "auto", "deliverable": "auto"}


async def test_the_charts_model_is_one_model_shared_by_the_roles(tmp_path: Path, db: str) -> None:
    org = write_org(tmp_path / "org", chart_level_script)
    flat = [delegate(support="Hours?"), deliver("9-17"), deliver("Support runs 9-17")]
    (tmp_path / "org" / "company-script.json").write_text(json.dumps(flat))
    # One script read in turn by the CEO, then support, then the CEO: a copy per role would
    # hand support the CEO's plan again.
    async with Swarm.from_yaml(org, db=db) as swarm:
        run = await swarm.start("Support hours")
        done = await swarm.wait(run.id, timeout=10)
    assert done.result == "Support runs 9-17"
