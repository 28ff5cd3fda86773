"""Drives one phase of a run in its own process, for the restart and crash tests.

Usage: python -m tests.process_driver PHASE ORG DB EFFECTS_FILE [RUN_ID]
Prints one JSON line with what the phase saw.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from qapten import Answer, Swarm, ToolContext
from qapten.testing import ScriptedChatModel, ask, delegate, deliver, use

EFFECTS = Path(sys.argv[4]) if len(sys.argv) > 4 else Path("effects.txt")


def append_line(text: str, ctx: ToolContext) -> str:
    """Append a line to the effects file (an external side effect, not idempotent)."""
    with EFFECTS.open("a", encoding="utf-8") as handle:
        handle.write(text + "\n")
    if os.environ.get("QAPTEN_TEST_HANG_IN_TOOL"):
        Path(str(EFFECTS) + ".inside").write_text(ctx.call_id)
        time.sleep(60)  # the test SIGKILLs the process here
    return "appended"


SCRIPTS: dict[str, dict[str, list[Any]]] = {
    # A restart between the plan's approval and the reports' proposals.
    "start": {
        "ceo": [delegate(cto="Record the decision", support="Ask about hours")],
        "cto": [use("append_line", text="decision recorded")],
        "support": [ask("Which hours?")],
    },
    # Everything after the restart: exactly one answer per proposal still to come.
    "finish": {
        "ceo": [deliver("final synthesis")],
        "cto": [deliver("recorded")],
        "support": [deliver("hours set")],
    },
    "crash": {
        "ceo": [delegate(cto="Record the decision")],
        "cto": [use("append_line", text="decision recorded")],
    },
    "recover": {
        "ceo": [deliver("final synthesis")],
        "cto": [deliver("recorded once")],
    },
}


async def main(phase: str, org: str, db: str, run_id: str | None) -> dict[str, Any]:
    model = ScriptedChatModel(SCRIPTS[phase])
    swarm = Swarm.from_yaml(org, model=model, db=db, tools=[append_line], lease_ttl=1.0)
    report: dict[str, Any] = {}
    if phase in ("start", "crash"):
        run = await swarm.start("Keep a record")
        [plan] = await swarm.pending(run.id)
        await swarm.decide(plan.id, "approve")
        pending = await swarm.pending(run.id)
        if phase == "crash":
            for proposal in pending:
                await swarm.decide(proposal.id, "approve")
            await swarm.pending(run.id)  # the process is killed in here, inside the tool
        report = {"run_id": run.id, "pending": sorted((p.role, p.kind) for p in pending)}
    else:
        assert run_id is not None
        await swarm.resume(run_id)  # runs cut off mid-step continue; decided work goes on
        first = await swarm.pending(run_id)
        report["pending_at_open"] = sorted((p.role, p.kind) for p in first)
        while pending := await swarm.pending(run_id):
            for proposal in pending:
                answer = Answer(text="9-17") if proposal.kind == "question" else "approve"
                await swarm.decide(proposal.id, answer)
        run = await swarm.wait(run_id, timeout=20)
        journal = await swarm.tool_calls(run_id)
        report.update(
            status=run.status, result=run.result, journal=[(c.tool, c.status) for c in journal]
        )
    created = [
        e
        for e in await swarm.events(report.get("run_id", run_id))
        if e.type in ("proposal.created", "act.auto")
    ]
    report.update(model_calls=len(model.calls), proposals_total=len(created))
    await swarm.close()
    return report


if __name__ == "__main__":
    phase, org, db = sys.argv[1:4]
    result = asyncio.run(main(phase, org, db, sys.argv[5] if len(sys.argv) > 5 else None))
    print(json.dumps(result))
