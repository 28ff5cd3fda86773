"""Deciding proposals without a human, for scripted use and the offline demo.

The org chart's autonomy levels still rule: `Autopilot` only takes decisions a human was asked
for, and only the kinds it was told to take. ``qapten run --auto-approve`` approves acts of level
``approve`` and leaves those of level ``human`` (questions above all) to the person at the terminal;
``qapten demo --auto`` also answers questions with a fixed text so that a mission runs to its end.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qapten.errors import ProposalAlreadyDecided
from qapten.orgchart import OrgChart
from qapten.policy import ActKind, AutonomyLevel
from qapten.proposals import Answer, Approve, Decision, Proposal

if TYPE_CHECKING:
    from qapten.swarm import Swarm

AUTOPILOT = "autopilot"
"""The `decided_by` of every decision an `Autopilot` takes, so the audit trail tells them apart."""

DEMO_ANSWER = "Use your best judgement and keep it short; I will review the result."


@dataclass(frozen=True)
class Autopilot:
    """Which pending proposals to decide automatically, and how."""

    approve: bool = True
    """Approve acts whose autonomy level is ``approve``."""
    approve_human: bool = False
    """Also approve acts whose level is ``human`` (questions excepted: they need an answer)."""
    answer: str | None = None
    """Answer every question with this text; ``None`` leaves questions to a human."""

    def decision_for(self, chart: OrgChart, proposal: Proposal) -> Decision | None:
        """The decision to take on `proposal`, or ``None`` when a human must take it."""
        if proposal.quorum is not None:  # named approvers only: never the autopilot
            return None
        if proposal.kind is ActKind.QUESTION:
            return None if self.answer is None else Answer(text=self.answer)
        if proposal.kind is ActKind.BUDGET:  # spending more is a human's call
            return Approve() if self.approve_human else None
        tool = proposal.act if proposal.kind is ActKind.ACTION else None
        level = chart.roles[proposal.role].autonomy.level_for(proposal.kind, tool)
        if level is AutonomyLevel.HUMAN and not self.approve_human:
            return None
        return Approve() if self.approve else None


FULL_AUTOPILOT = Autopilot(approve=True, approve_human=True, answer=DEMO_ANSWER)
"""Decides everything: a mission runs to its end with nobody at the keyboard."""


async def decide_automatically(swarm: Swarm, run_id: str, pilot: Autopilot) -> list[Proposal]:
    """Take every decision `pilot` may on the run's pending proposals, once the run has settled.

    Returns the proposals left for a human. A proposal someone else decided meanwhile is skipped.
    """
    left: list[Proposal] = []
    for proposal in await swarm.pending(run_id):
        decision = pilot.decision_for(swarm.chart, proposal)
        if decision is None:
            left.append(proposal)
            continue
        with contextlib.suppress(ProposalAlreadyDecided):
            await swarm.decide(proposal.id, decision, by=AUTOPILOT)
    return left
