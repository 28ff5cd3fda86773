"""Two decisions on one proposal: a compare-and-set, so exactly one wins and the tool runs once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from qapten import ProposalAlreadyDecided, ProposalStatus, Reject, ToolContext
from qapten.driver import run_config
from qapten.testing import ScriptedChatModel, delegate, deliver, use

from .conftest import SwarmFactory, write_org


async def test_twenty_concurrent_decisions_one_winner(
    make_swarm: SwarmFactory, tmp_path: Path
) -> None:
    effects: list[str] = []

    def deploy(version: str, ctx: ToolContext) -> str:
        """Deploy a version to production."""
        effects.append(version)
        return f"deployed {version}"

    model = ScriptedChatModel(
        {
            "ceo": [delegate(cto="Deploy 1.2"), deliver("shipped")],
            "cto": [use("deploy", version="1.2"), deliver("deployed 1.2")],
        }
    )
    swarm = make_swarm(model, tools=[deploy], org=write_org(tmp_path, give_cto_deploy))
    run = await swarm.start("Ship 1.2")
    [plan] = await swarm.pending(run.id)
    await swarm.decide(plan.id, "approve")
    [action] = await swarm.pending(run.id)
    assert action.act == "deploy"

    decisions = [
        swarm.decide(action.id, "approve" if i % 2 == 0 else Reject(feedback="no"), by=f"human{i}")
        for i in range(20)
    ]
    outcomes = await asyncio.gather(*decisions, return_exceptions=True)
    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    losers = [o for o in outcomes if isinstance(o, ProposalAlreadyDecided)]
    assert len(winners) == 1 and len(losers) == 19
    assert all(loser.decided_by == winners[0].decided_by for loser in losers)

    [final] = await swarm.pending(run.id)
    await swarm.decide(final.id, "approve")
    await swarm.wait(run.id, timeout=10)
    assert effects == (["1.2"] if winners[0].status == "approved" else [])
    refused = [e for e in await swarm.events(run.id) if e.type == "decision.refused"]
    assert len(refused) == 19


def give_cto_deploy(data: dict[str, Any]) -> None:
    data["roles"]["cto"]["tools"] = ["deploy"]


async def test_a_decision_landing_after_dispatch_looked_does_not_stall_the_run(
    make_swarm: SwarmFactory,
) -> None:
    model = ScriptedChatModel({"ceo": [deliver("draft"), deliver("final")]})
    swarm = make_swarm(model)
    run = await swarm.start("Write")
    [draft] = await swarm.pending(run.id)
    # The window: dispatch has read the proposal as pending and ended; the decision lands now.
    await swarm.store.decide(
        draft.id, status=ProposalStatus.REVISION_REQUESTED, decided_by="alice", feedback="shorter"
    )
    _, graph, _ = await swarm._ready()
    board = (await graph.aget_state(run_config(run.id))).values  # the board dispatch left
    assert await swarm._driver._settle(run.id, board) is True  # again, not "no task can move"
    assert (await swarm.run(run.id)).status == "running"
    await swarm.resume(run.id)
    [final] = await swarm.pending(run.id)
    assert final.payload == {"result": "final"}
