"""Qapten: a company of AI role agents that proposes while a human orchestrates.

::

    from qapten import Swarm
    swarm = Swarm.from_yaml("agents/org.yaml", model=...)
    run = await swarm.start("Launch the coaching app")
    for p in await swarm.pending():
        await swarm.decide(p.id, "approve")
"""

import importlib
import typing

if typing.TYPE_CHECKING:
    from qapten.errors import (
        ConfigurationError,
        InvalidDecision,
        OrgChartError,
        ProposalAlreadyDecided,
        ProposalNotFound,
        QaptenError,
        RunFailed,
        RunNotFound,
        RunNotRetryable,
        ScriptExhausted,
        WorkspaceError,
    )
    from qapten.models import ModelRef
    from qapten.orgchart import OrgChart, Role
    from qapten.policy import ActKind, Autonomy, AutonomyLevel
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

# Names load on first use (PEP 562): `import qapten` stays cheap, so commands that only read a
# chart (`qapten validate`) do not pay for LangGraph and the database drivers.
_EXPORTS = {
    "ActKind": "qapten.policy",
    "Answer": "qapten.proposals",
    "Approve": "qapten.proposals",
    "Autonomy": "qapten.policy",
    "AutonomyLevel": "qapten.policy",
    "ConfigurationError": "qapten.errors",
    "Decision": "qapten.proposals",
    "Edit": "qapten.proposals",
    "Event": "qapten.store",
    "InvalidDecision": "qapten.errors",
    "ModelRef": "qapten.models",
    "OrgChart": "qapten.orgchart",
    "OrgChartError": "qapten.errors",
    "Proposal": "qapten.proposals",
    "ProposalAlreadyDecided": "qapten.errors",
    "ProposalNotFound": "qapten.errors",
    "ProposalStatus": "qapten.proposals",
    "QaptenError": "qapten.errors",
    "Reject": "qapten.proposals",
    "Revise": "qapten.proposals",
    "Role": "qapten.orgchart",
    "Run": "qapten.store",
    "RunFailed": "qapten.errors",
    "RunNotFound": "qapten.errors",
    "RunNotRetryable": "qapten.errors",
    "ScriptExhausted": "qapten.errors",
    "Swarm": "qapten.swarm",
    "Tool": "qapten.tools",
    "ToolCall": "qapten.store",
    "ToolContext": "qapten.tools",
    "WorkspaceError": "qapten.errors",
    "tool_from_callable": "qapten.tools",
}


def __getattr__(name: str) -> typing.Any:
    module = _EXPORTS.get(name)
    if module is None:
        msg = f"module 'qapten' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


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
    "RunNotRetryable",
    "ScriptExhausted",
    "Swarm",
    "Tool",
    "ToolCall",
    "ToolContext",
    "WorkspaceError",
    "tool_from_callable",
]
