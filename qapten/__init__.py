"""Qapten: a company of AI role agents that proposes while a human orchestrates.

::

    from qapten import Swarm
    swarm = Swarm.from_yaml("agents/org.yaml", model=...)
    run = await swarm.start("Launch the coaching app")
    for p in await swarm.pending():
        await swarm.decide(p.id, "approve")
"""

from qapten.errors import (
    ConfigurationError,
    InvalidDecision,
    OrgChartError,
    ProposalAlreadyDecided,
    ProposalNotFound,
    QaptenError,
    RunFailed,
    RunNotFound,
    ScriptExhausted,
    WorkspaceError,
)
from qapten.models import ModelRef
from qapten.orgchart import ActKind, Autonomy, AutonomyLevel, OrgChart, Role
from qapten.proposals import (
    Answer,
    Approve,
    Decision,
    Edit,
    Proposal,
    ProposalStatus,
    Reject,
    Revise,
)
from qapten.store import Event, Run, ToolCall
from qapten.swarm import Swarm
from qapten.tools import Tool, ToolContext, tool_from_callable

__all__ = [
    "ActKind",
    "Answer",
    "Approve",
    "Autonomy",
    "AutonomyLevel",
    "ConfigurationError",
    "Decision",
    "Edit",
    "Event",
    "InvalidDecision",
    "ModelRef",
    "OrgChart",
    "OrgChartError",
    "Proposal",
    "ProposalAlreadyDecided",
    "ProposalNotFound",
    "ProposalStatus",
    "QaptenError",
    "Reject",
    "Revise",
    "Role",
    "Run",
    "RunFailed",
    "RunNotFound",
    "ScriptExhausted",
    "Swarm",
    "Tool",
    "ToolCall",
    "ToolContext",
    "WorkspaceError",
    "tool_from_callable",
]
