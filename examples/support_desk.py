"""A custom org chart: a two-role support desk answers one customer ticket.

Run with:  python examples/support_desk.py

The chart is examples/support_desk/org.yaml: a desk lead who routes the ticket to an agent, and
the agent who drafts the answer. Its autonomy policy decides what a human sees: routing and
drafting run alone (``auto``, logged as events), while the answer the customer reads waits for
a human (``approve``). Here the scripted model plays both roles and this script approves what
waits, so it runs offline; pass any LangChain chat model instead to run the desk for real.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from qapten import Swarm
from qapten.testing import ScriptedChatModel, delegate, deliver, use

ORG = Path(__file__).resolve().parent / "support_desk" / "org.yaml"
TICKET = "T-1042 from Dana: I was charged twice for my March invoice. Please fix it."
ANSWER = (
    "Hi Dana, sorry about the double charge on your March invoice. We have refunded the "
    "second payment; you will see it on your statement within 5 working days."
)

SCRIPT = ScriptedChatModel(
    {
        "desk_lead": [
            delegate(agent=f"Answer this ticket; a duplicate charge is always refunded. {TICKET}"),
            deliver(ANSWER),
        ],
        "agent": [
            use("workspace.write_file", path="replies/T-1042.md", content=ANSWER),
            deliver(f"Draft in replies/T-1042.md: {ANSWER}"),
        ],
    }
)


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        async with Swarm.from_yaml(ORG, model=SCRIPT, db=f"sqlite:///{folder}/desk.db") as swarm:
            run = await swarm.start(TICKET)
            print(f"Ticket: {TICKET}")
            approvals = 0
            while pending := await swarm.pending(run.id):  # only what the policy gates
                for proposal in pending:
                    print(f"  waits for you: {proposal.role} {proposal.kind}: {proposal.title}")
                    await swarm.decide(proposal.id, "approve")
                    approvals += 1
            done = await swarm.wait(run.id, timeout=30)
            ran_alone = [e.data for e in await swarm.events(run.id) if e.type == "act.auto"]
            for act in ran_alone:
                print(f"  ran alone:     {act['role']} {act['kind']}: {act['title']}")
            print(f"{approvals} approved by a human, {len(ran_alone)} ran alone (auto)")
            print(f"Answer to the customer: {done.result}")
            print(f"replies/T-1042.md: {swarm.workspace(run.id).read_text('replies/T-1042.md')}")


if __name__ == "__main__":
    asyncio.run(main())
