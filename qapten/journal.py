"""Tool side effects go through a journal keyed by the proposal id (DESIGN §4, trap 3).

A call that finished is never run again: its recorded result is replayed. A call that started
but never finished (the process died inside it) is run again only if the tool is idempotent;
otherwise it is marked ``interrupted`` and the role is told that the effect is unknown, so that a
payment or a post is not made twice.
"""

from __future__ import annotations

import logging

from qapten.errors import WorkspaceError
from qapten.proposals import Proposal
from qapten.store import Store
from qapten.store.journal import FinishedCall
from qapten.tools import Tool, ToolContext
from qapten.workspace import Workspace

logger = logging.getLogger(__name__)

RESULT_LIMIT = 2000
"""Characters of a tool's result kept in the role's notes (the journal keeps it whole)."""


async def run_tool(
    store: Store, tool: Tool, args: dict[str, object], proposal: Proposal, workspace: Workspace
) -> tuple[str, FinishedCall | None]:
    """Run `tool` at most once for `proposal`. Returns a one-line outcome for the role's notes,
    and how the call ended, which the caller records (`Store.record_act`) with the rest of its
    step; None when the journal had its end already. Until that is recorded, the call stays
    ``started``: a replay then treats it as one that a crash cut short."""
    entry = await store.start_tool_call(
        proposal.id,
        run_id=proposal.run_id,
        task_id=proposal.task_id,
        role=proposal.role,
        tool=tool.name,
        args=dict(args),
    )
    if entry is not None and entry.status != "started":
        return _outcome(entry.status, entry.result or ""), None
    if entry is not None and not tool.idempotent:
        result = (
            "the process stopped while this call was running; it was not run again "
            "because the tool is not idempotent, so its effect is unknown: check before "
            "trying again"
        )
        return _finished(proposal, tool, "interrupted", result)
    context = ToolContext(run_id=proposal.run_id, call_id=proposal.id, workspace=workspace)
    try:
        result = await tool.run(args, context)
        status = "done"
    except WorkspaceError as exc:
        result, status = str(exc), "refused"
    except Exception as exc:  # a tool's failure is the role's news, not the engine's crash
        logger.info("tool %s failed in run %s", tool.name, proposal.run_id, exc_info=True)
        result, status = f"{type(exc).__name__}: {exc}", "failed"
    return _finished(proposal, tool, status, result)


def _finished(proposal: Proposal, tool: Tool, status: str, result: str) -> tuple[str, FinishedCall]:
    call = FinishedCall(proposal.id, proposal.run_id, tool.name, status, result)
    return _outcome(status, result), call


def _outcome(status: str, result: str) -> str:
    shown = result if len(result) <= RESULT_LIMIT else result[:RESULT_LIMIT] + " […]"
    return f"{status}: {shown}"
