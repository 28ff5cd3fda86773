"""A full mission of the default org, decided in-process, with the scripted model.

Run with:  .venv/bin/python examples/quickstart.py

No network, no API key: the scripted model plays the four roles. Replace it with any LangChain
chat model (e.g. ``ChatOpenAI(model="gpt-4o-mini")``) to run the same org for real.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from rich.console import Console

from qapten import Answer, Edit, Proposal, Swarm
from qapten.report import task_tree
from qapten.testing import ScriptedChatModel, ask, delegate, deliver, use

ORG = Path(__file__).resolve().parent.parent / "agents" / "org.yaml"
MISSION = "Launch the public-speaking coaching app"

SCRIPT = ScriptedChatModel(
    {
        "ceo": [
            delegate(
                cto="Choose the hosting and write a one-page technical plan to plan.md",
                marketcom="Draft the launch announcement in launch.md",
                support="Define the support channels and hours for launch week",
            ),
            deliver(
                "Launch plan: app hosted in the EU (plan.md), announcement ready (launch.md), "
                "support by chat and e-mail 9-17 CET during launch week."
            ),
        ],
        "cto": [
            use(
                "workspace.write_file",
                path="plan.md",
                content="# Plan\n- Hosting: any EU provider\n- Deploy: containers\n",
            ),
            deliver("Technical plan written to plan.md (EU hosting, containers)."),
        ],
        "marketcom": [
            use(
                "workspace.write_file",
                path="launch.md",
                content="Speak with confidence: our coaching app launches Monday.",
            ),
            deliver("Announcement drafted in launch.md."),
        ],
        "support": [
            ask("Which hours should support cover during launch week?"),
            deliver("Support by chat and e-mail, 9-17 CET, during launch week."),
        ],
    }
)


def human_decision(proposal: Proposal) -> object:
    """What the human orchestrator says; here, scripted too."""
    if proposal.kind == "question":
        return Answer(text="9-17 CET, weekdays")
    if proposal.act == "workspace.write_file" and proposal.role == "cto":
        edited = dict(
            proposal.payload, content=proposal.payload["content"] + "- Budget: 300 EUR/month\n"
        )
        return Edit(payload=edited)
    return "approve"


async def main() -> None:
    console = Console()
    with tempfile.TemporaryDirectory() as folder:
        async with Swarm.from_yaml(ORG, model=SCRIPT, db=f"sqlite:///{folder}/qapten.db") as swarm:
            run = await swarm.start(MISSION)
            console.print(f"[bold]Mission:[/] {MISSION}  (run {run.id})")
            while pending := await swarm.pending(run.id):
                for proposal in pending:
                    decision = human_decision(proposal)
                    shown = (
                        decision if isinstance(decision, str) else type(decision).__name__.lower()
                    )
                    console.print(
                        f"  {proposal.role:<10} {proposal.kind:<12} {proposal.title}  → {shown}"
                    )
                    await swarm.decide(proposal.id, decision)  # type: ignore[arg-type]
            done = await swarm.wait(run.id)
            console.print(task_tree(await swarm.tasks(run.id), title=f"run {run.id}"))
            console.print(f"[bold]Final deliverable:[/] {done.result}")
            console.print(f"[bold]plan.md:[/]\n{swarm.workspace(run.id).read_text('plan.md')}")


if __name__ == "__main__":
    asyncio.run(main())
