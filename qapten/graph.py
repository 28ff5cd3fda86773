"""Build the LangGraph graph of an org chart: one node per role, plus `dispatch`.

::

    START ─▶ dispatch ─Send(task)─▶ ceo | cto | marketcom | … ─▶ dispatch ─▶ … ─▶ END

`dispatch` is the only node that looks at the whole board. Each superstep it turns decided
proposals into work, wakes managers whose children are all finished, enforces the run's step
budget, and sends every runnable task to its role's node; the role nodes run in parallel and
each touches only its own task. When nothing is runnable the graph ends: the run then waits,
durably, for a human (the store holds the pending proposals) or is finished.
"""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command, Send

from qapten.board import Board, StepInput, Task, TaskStatus
from qapten.context import SwarmContext
from qapten.orgchart import OrgChart
from qapten.roles import act, child_report, outcome_events, think
from qapten.store.notes import Note, report_key

DISPATCH = "dispatch"
THINK = "think"
ACT = "act"


def build_graph(chart: OrgChart) -> StateGraph[Board, SwarmContext, Board, Board]:
    """The uncompiled graph of `chart`; the caller compiles it with its own checkpointer."""
    builder: StateGraph[Board, SwarmContext, Board, Board] = StateGraph(
        Board, context_schema=SwarmContext
    )
    # LangGraph's overloads do not cover nodes taking both config and runtime.
    builder.add_node(DISPATCH, dispatch, destinations=(*chart.roles, DISPATCH, END))  # type: ignore[call-overload]
    for name in chart.roles:
        builder.add_node(name, role_step, input_schema=StepInput)  # type: ignore[call-overload]
        builder.add_edge(name, DISPATCH)
    builder.add_edge(START, DISPATCH)
    return builder


def run_id_of(config: RunnableConfig) -> str:
    return str(config["configurable"]["thread_id"])


async def dispatch(
    state: Board, config: RunnableConfig, runtime: Runtime[SwarmContext]
) -> Command[Any]:
    ctx = runtime.context
    run_id = run_id_of(config)
    tasks = state["tasks"]
    if TaskStatus(tasks[state["root"]]["status"]).finished:
        return Command(goto=END)
    patches: dict[str, dict[str, Any]] = {}

    # Decisions live in the store (the compare-and-set happens there); pick up the new ones.
    # Several tasks may wait on one proposal (a budget that they all reached). The run's
    # status comes in the same read: a cancel lands between supersteps, and no step may start
    # after it, even in a run in flight.
    waiting: dict[str, list[str]] = {}
    for t in tasks.values():
        if t["status"] == TaskStatus.WAITING.value and t["proposal"]:
            waiting.setdefault(t["proposal"], []).append(t["id"])
    status, decided = await ctx.store.run_status_and_decided(run_id, list(waiting))
    if status == "cancelled":
        return Command(goto=END)
    for proposal_id in decided:
        for task_id in waiting[proposal_id]:
            patches[task_id] = {"status": TaskStatus.ACTING.value}

    # Managers whose children have all finished get their results and think again. The
    # reports are notes in the store, keyed by child: a replayed dispatch adds none twice.
    reports: list[Note] = []
    for task in tasks.values():
        if task["status"] != TaskStatus.DELEGATED.value:
            continue
        children = [tasks[c] for c in task["awaiting"]]
        if all(TaskStatus(c["status"]).finished for c in children):
            reports.extend(Note(task["id"], report_key(c["id"]), child_report(c)) for c in children)
            patches[task["id"]] = {"status": TaskStatus.THINKING.value, "awaiting": []}
    await ctx.store.add_notes(run_id, reports)

    def current(task: Task) -> Task:
        return {**task, **patches.get(task["id"], {})}  # type: ignore[typeddict-item]

    budget = ctx.chart.max_steps - state["steps"]
    sends: list[Send] = []
    for task in map(current, tasks.values()):
        if task["status"] == TaskStatus.THINKING.value:
            if budget <= 0:
                reason = (
                    f"run step limit reached: {ctx.chart.max_steps} model calls "
                    "(max_steps in the org chart)"
                )
                patches[task["id"]] = {"status": TaskStatus.FAILED.value, "error": reason}
                await _record_outcome(ctx, run_id, task, patches[task["id"]])
                continue
            budget -= 1
            sends.append(
                Send(task["role"], StepInput(phase=THINK, mission=state["mission"], task=task))
            )
        elif task["status"] == TaskStatus.ACTING.value:
            sends.append(
                Send(task["role"], StepInput(phase=ACT, mission=state["mission"], task=task))
            )
    if not sends and patches:
        # Something changed (a failure to propagate) but nothing runs: look again next superstep.
        return Command(update={"tasks": patches}, goto=DISPATCH)
    return Command(update={"tasks": patches}, goto=sends or END)


async def role_step(
    step: StepInput, config: RunnableConfig, runtime: Runtime[SwarmContext]
) -> dict[str, Any]:
    ctx = runtime.context
    await ctx.foreground.turn()  # a human waiting on a request goes first
    run_id = run_id_of(config)
    task = step["task"]
    if step["phase"] == THINK:
        patch, calls = await think(ctx, run_id, step["mission"], task)
        await _record_outcome(ctx, run_id, task, patch)
        return {"tasks": {task["id"]: patch}, "steps": calls}
    patch, children = await act(ctx, run_id, task)  # it records its outcome itself
    updates: dict[str, Any] = {task["id"]: patch}
    updates.update({child["id"]: child for child in children})
    return {"tasks": updates}


async def _record_outcome(
    ctx: SwarmContext, run_id: str, task: Task, patch: dict[str, Any]
) -> None:
    for type_, data in outcome_events(task, patch):
        await ctx.store.add_event(run_id, type_, data)
