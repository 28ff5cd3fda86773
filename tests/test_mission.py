"""A four-role mission end to end with the scripted model, and the reject / revise paths."""

from __future__ import annotations

from qapten import Answer, Edit, Reject, Revise
from qapten.testing import ScriptedChatModel, ask, delegate, deliver, use

from .conftest import SwarmFactory


def full_script() -> ScriptedChatModel:
    return ScriptedChatModel(
        {
            "ceo": [
                delegate(
                    cto="Write the technical plan",
                    marketcom="Write the launch post",
                    support="Set up support",
                ),
                deliver("Synthesis: plan, launch post and support are ready."),
            ],
            "cto": [
                use("workspace.write_file", path="plan.md", content="v1: use a monolith"),
                deliver("The plan is in plan.md"),
            ],
            "marketcom": [
                use("workspace.write_file", path="launch.md", content="We launch on Monday!"),
                deliver("The launch post is in launch.md"),
            ],
            "support": [
                ask("Which support hours do we offer?"),
                deliver("Support runs 9-17 CET, as decided."),
            ],
        }
    )


async def test_four_role_mission_end_to_end(make_swarm: SwarmFactory) -> None:
    model = full_script()
    swarm = make_swarm(model)
    run = await swarm.start("Launch the public-speaking coaching app")

    # 1. The CEO's plan waits for the human.
    [plan] = await swarm.pending(run.id)
    assert (plan.role, plan.kind, plan.act) == ("ceo", "plan", "delegate")
    assert [t["to"] for t in plan.payload["tasks"]] == ["cto", "marketcom", "support"]
    assert (await swarm.run(run.id)).status == "waiting"
    await swarm.decide(plan.id, "approve")

    # 2. The three reports work in parallel: CTO's gated write, support's question.
    #    MarketCom's write_file is auto in the chart, so its next proposal is the deliverable.
    pending = {p.role: p for p in await swarm.pending(run.id)}
    assert set(pending) == {"cto", "marketcom", "support"}
    assert pending["cto"].kind == "action"
    assert pending["cto"].payload == {"path": "plan.md", "content": "v1: use a monolith"}
    assert pending["support"].kind == "question"
    assert pending["marketcom"].kind == "deliverable"
    await swarm.decide(
        pending["cto"].id, Edit(payload={"path": "plan.md", "content": "v2: use services"})
    )
    await swarm.decide(pending["support"].id, Answer(text="9-17 CET, weekdays"))
    await swarm.decide(pending["marketcom"].id, "approve")

    # 3. Last, the CEO's synthesis (deliverable: approve).
    [final] = await swarm.pending(run.id)
    assert (final.role, final.kind) == ("ceo", "deliverable")
    await swarm.decide(final.id, "approve")
    done = await swarm.wait(run.id, timeout=10)
    assert done.status == "done"
    assert done.result == "Synthesis: plan, launch post and support are ready."

    # The edited payload ran exactly as edited; the auto write ran as proposed.
    calls = await swarm.tool_calls(run.id)
    assert sorted((c.args["path"], c.args["content"], c.status) for c in calls) == [
        ("launch.md", "We launch on Monday!", "done"),
        ("plan.md", "v2: use services", "done"),
    ]
    workspace = swarm.workspace(run.id)
    assert workspace.read_text("plan.md") == "v2: use services"
    assert workspace.read_text("launch.md") == "We launch on Monday!"

    # The answer reached support's next prompt; the reports' results reached the CEO.
    assert "9-17 CET, weekdays" in model.calls_for("support")[1].prompt
    synthesis_prompt = model.calls_for("ceo")[1].prompt
    for text in ("The plan is in plan.md", "The launch post is in launch.md", "9-17 CET"):
        assert text in synthesis_prompt

    # The task tree tells the story.
    tasks = {t["id"]: t for t in await swarm.tasks(run.id)}
    assert tasks["t1"]["children"] == ["t1.1", "t1.2", "t1.3"]
    assert [tasks[c]["role"] for c in tasks["t1"]["children"]] == ["cto", "marketcom", "support"]
    assert all(t["status"] == "done" for t in tasks.values())

    # Every model call became exactly one proposal (approved by a human or by the policy).
    proposals = [
        e for e in await swarm.events(run.id) if e.type in ("proposal.created", "act.auto")
    ]
    assert len(model.calls) == len(proposals) == 8
    kinds = [e.type for e in await swarm.events(run.id)]
    assert kinds[0] == "run.started" and kinds[-1] == "run.done"
    assert kinds.count("proposal.decided") == 5  # plan, edit, answer, 2 deliverables


async def test_reject_feedback_reaches_the_next_prompt(make_swarm: SwarmFactory) -> None:
    model = ScriptedChatModel(
        {
            "ceo": [
                delegate(cto="Spend 1M on ads"),
                delegate(cto="Build a landing page"),
                deliver("done"),
            ],
            "cto": [deliver("landing page built")],
        }
    )
    swarm = make_swarm(model)
    run = await swarm.start("Grow")
    [plan] = await swarm.pending(run.id)
    await swarm.decide(plan.id, Reject(feedback="far too expensive"))
    [second] = await swarm.pending(run.id)
    assert second.payload["tasks"][0]["brief"] == "Build a landing page"
    assert "far too expensive" in model.calls_for("ceo")[1].prompt
    assert "rejected" in model.calls_for("ceo")[1].prompt
    await swarm.decide(second.id, "approve")
    [final] = await swarm.pending(run.id)
    await swarm.decide(final.id, "approve")
    assert (await swarm.wait(run.id, timeout=10)).result == "done"


async def test_revise_redoes_the_work_with_the_feedback(make_swarm: SwarmFactory) -> None:
    model = ScriptedChatModel({"ceo": [deliver("draft"), deliver("better draft")]})
    swarm = make_swarm(model)
    run = await swarm.start("Write a vision statement")
    [draft] = await swarm.pending(run.id)
    assert draft.kind == "deliverable"
    await swarm.decide(draft.id, Revise(feedback="mention Europe"))
    [better] = await swarm.pending(run.id)
    assert "mention Europe" in model.calls_for("ceo")[1].prompt
    await swarm.decide(better.id, "approve")
    assert (await swarm.wait(run.id, timeout=10)).result == "better draft"
    tasks = await swarm.tasks(run.id)
    assert tasks[0]["revisions"] == 1
