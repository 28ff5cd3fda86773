"""Token budgets: at the limit a budget proposal waits for a human; go on, go on with another
amount, or stop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qapten import Edit, Reject
from qapten.errors import InvalidDecision
from qapten.testing import ScriptedChatModel, delegate, deliver, use

from .conftest import SwarmFactory, write_org


def _script() -> ScriptedChatModel:
    return ScriptedChatModel(
        {
            "ceo": [delegate(cto="Write the plan"), deliver("Synthesis")],
            "cto": [
                use("workspace.write_file", path="plan.md", content="v1"),
                deliver("The plan"),
            ],
        }
    )


def _org(tmp_path: Path, **budgets: Any) -> Path:
    def change(data: dict[str, Any]) -> None:
        for role in ("ceo", "cto"):
            data["roles"][role]["autonomy"] = {
                "plan": "auto",
                "action": "auto",
                "deliverable": "auto",
            }
        if "run" in budgets:
            data["budget"] = budgets["run"]
        if "cto" in budgets:
            data["roles"]["cto"]["budget"] = budgets["cto"]

    return write_org(tmp_path / "org", change)


async def test_a_role_at_its_budget_asks_and_goes_on_when_approved(
    make_swarm: SwarmFactory, tmp_path: Path
) -> None:
    model = _script()
    swarm = make_swarm(model, org=_org(tmp_path, cto=10))
    run = await swarm.start("Plan the launch")

    # The CTO's first call (an auto tool call) spent more than 10 tokens, so its next step is
    # not a model call but a question of budget.
    [budget] = await swarm.pending(run.id)
    assert (budget.kind, budget.act, budget.role) == ("budget", "budget", "cto")
    spent = budget.payload["spent"]
    assert budget.payload == {
        "scope": "cto",
        "spent": spent,
        "budget": 10,
        "add_tokens": spent - 10 + 10,
    }
    assert spent > 10
    assert "continue with" in budget.title
    calls_before = len(model.calls_for("cto"))

    await swarm.decide(budget.id, "approve")
    done = await swarm.wait(run.id, timeout=10)
    assert done.result == "Synthesis"
    assert len(model.calls_for("cto")) == calls_before + 1  # the CTO went on after approval
    notes = "\n".join(model.calls_for("cto")[-1].prompt.splitlines())
    assert f"added {spent:,} tokens to the budget of cto" in notes


async def test_a_budget_edit_grants_another_amount_and_asks_again(
    make_swarm: SwarmFactory, tmp_path: Path
) -> None:
    swarm = make_swarm(_script(), org=_org(tmp_path, cto=10))
    run = await swarm.start("Plan the launch")
    [first] = await swarm.pending(run.id)

    with pytest.raises(InvalidDecision, match="add_tokens"):
        await swarm.decide(first.id, Edit(payload={"add_tokens": 0}))
    await swarm.decide(first.id, Edit(payload={"add_tokens": 1}))

    # One token more is less than the CTO's spend already: the next step asks again.
    [second] = await swarm.pending(run.id)
    assert second.id != first.id
    assert second.payload["budget"] == 10 + 1
    await swarm.decide(second.id, "approve")
    assert (await swarm.wait(run.id, timeout=10)).status == "done"


async def test_rejecting_a_budget_stops_the_task_and_the_manager_hears_why(
    make_swarm: SwarmFactory, tmp_path: Path
) -> None:
    model = _script()
    swarm = make_swarm(model, org=_org(tmp_path, cto=10))
    run = await swarm.start("Plan the launch")
    [budget] = await swarm.pending(run.id)
    await swarm.decide(budget.id, Reject(feedback="enough"), by="alice")

    done = await swarm.wait(run.id, timeout=10)
    cto_task = next(t for t in await swarm.tasks(run.id) if t["role"] == "cto")
    assert cto_task["status"] == "failed"
    assert "stopped at the token budget: cto spent" in cto_task["error"]
    assert "alice chose to stop" in cto_task["error"]
    assert done.result == "Synthesis"  # the CEO was told, and went on
    assert "stopped at the token budget" in model.calls_for("ceo")[-1].prompt


async def test_tasks_at_the_run_budget_share_one_proposal(
    make_swarm: SwarmFactory, tmp_path: Path
) -> None:
    model = ScriptedChatModel(
        {
            "ceo": [delegate(cto="Plan", support="Support"), deliver("Synthesis")],
            "cto": [deliver("The plan")],
            "support": [deliver("The FAQ")],
        }
    )

    def change(data: dict[str, Any]) -> None:
        data["budget"] = 5  # the CEO's first call alone spends more
        for role in ("ceo", "cto", "support"):
            data["roles"][role]["autonomy"] = {"plan": "auto", "deliverable": "auto"}

    swarm = make_swarm(model, org=write_org(tmp_path / "org", change))
    run = await swarm.start("Plan the launch")
    [budget] = await swarm.pending(run.id)  # two tasks wait, one question is asked
    assert budget.payload["scope"] == "run"
    waiting = [t for t in await swarm.tasks(run.id) if t["status"] == "waiting"]
    assert {t["role"] for t in waiting} == {"cto", "support"}
    assert {t["proposal"] for t in waiting} == {budget.id}

    await swarm.decide(budget.id, Edit(payload={"add_tokens": 100_000}))
    done = await swarm.wait(run.id, timeout=10)
    assert done.result == "Synthesis"
    assert model.remaining() == 0
