"""The mission every benchmark runs: a plan, three parallel tasks with one tool each, a synthesis.

    ceo ── delegate ─▶ cto, marketcom, support ── note (a tool) ─▶ deliver ─▶ ceo ── deliver

The same shape is built twice: as a Qapten org chart (`chart`) and as a hand-written LangGraph
graph (bench/raw_graph.py). Both are driven by the same scripted zero-latency model (`model`),
whose answers depend only on what the role was shown, so concurrent runs can share it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qapten import OrgChart
from qapten.testing import Endless, RecordedCall, ScriptedChatModel, delegate, deliver, use

ORG_DIR = Path(__file__).resolve().parent / "org"
WORKERS = ("cto", "marketcom", "support")
APPROVALS_PER_MISSION = 8
"""The plan, three tool calls, three deliverables and the synthesis: each one a decision."""
MODEL_CALLS_PER_MISSION = 8

BRIEFS = {
    "cto": "Write the technical plan for the launch.",
    "marketcom": "Draft the launch announcement.",
    "support": "Prepare the support FAQ for the launch.",
}


def note(text: str) -> str:
    """Keep a short note for the team (the benchmark's tool: no I/O, so only Qapten is timed)."""
    return f"noted {len(text)} characters"


def chart(*, autonomy: str = "approve") -> OrgChart:
    """The four roles; every plan, action and deliverable needs approval (or none, with auto)."""
    every = {"plan": autonomy, "action": autonomy, "deliverable": autonomy}
    data: dict[str, Any] = {
        "name": "Bench Corp",
        "max_steps": 10_000,
        "roles": {
            "ceo": {"title": "Chief Executive Officer", "reports_to": None, "autonomy": every},
            **{
                role: {
                    "title": role.upper(),
                    "reports_to": "ceo",
                    "tools": ["note"],
                    "autonomy": every,
                }
                for role in WORKERS
            },
        },
    }
    return OrgChart.from_dict(data, base_dir=ORG_DIR, extra_tools=["note"])


def answer(call: RecordedCall) -> dict[str, Any]:
    """What a role answers, from what it was shown: each run follows the mission's shape."""
    if call.role == "ceo":
        if "Result from" in call.prompt:
            return deliver("Launch ready: plan, announcement and FAQ are done.")
        return delegate(**BRIEFS)
    if "You called" in call.prompt or "noted" in call.prompt:
        return deliver(f"{call.role} work done.")
    return use("note", text=f"{call.role}: first draft of the work.")


def model() -> ScriptedChatModel:
    return ScriptedChatModel({role: Endless(answer) for role in ("ceo", *WORKERS)})
