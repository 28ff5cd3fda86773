"""The benchmark's mission as a hand-written LangGraph graph: what a developer would write
without Qapten, with the same checkpointer, the same model and the same approvals.

Each role is three nodes: think (a model call), gate (an `interrupt` the human answers) and act
(run the tool, or keep the deliverable). The workers run in parallel after the plan is approved;
the CEO synthesises once all three delivered.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, interrupt

from bench.mission import WORKERS, note
from qapten.testing import ROLE_METADATA_KEY


class Lane(TypedDict, total=False):
    act: str
    args: dict[str, Any]
    notes: list[str]
    result: str


def merge_lanes(current: dict[str, Lane], update: dict[str, Lane]) -> dict[str, Lane]:
    return {**current, **{role: {**current.get(role, {}), **lane} for role, lane in update.items()}}


class State(TypedDict):
    mission: str
    lanes: Annotated[dict[str, Lane], merge_lanes]
    steps: Annotated[int, operator.add]
    result: str


def delegate(tasks: list[dict[str, str]]) -> None:
    """Hand tasks to your reports: [{"to": role, "brief": text}, ...]."""


def deliver(result: str) -> None:
    """Hand in your result."""


CEO_TOOLS = [convert_to_openai_tool(delegate), convert_to_openai_tool(deliver)]
WORKER_TOOLS = [convert_to_openai_tool(note), convert_to_openai_tool(deliver)]
RUN_CONFIG_LIMIT = 10_000


def build_raw_graph(
    model: BaseChatModel, checkpointer: BaseCheckpointSaver[Any], *, approvals: bool = True
) -> Any:
    """The mission's graph; without `approvals`, no gates (every act runs at once)."""
    ceo_model = model.bind_tools(CEO_TOOLS, tool_choice="any")
    worker_model = model.bind_tools(WORKER_TOOLS, tool_choice="any")

    def thinker(role: str) -> Any:
        bound = ceo_model if role == "ceo" else worker_model

        async def think(state: State, config: RunnableConfig) -> dict[str, Any]:
            lane = state["lanes"].get(role, {})
            brief = lane.get("brief", state["mission"]) if isinstance(lane, dict) else ""
            lines = [f"Mission: {state['mission']}", f"Your task: {brief}"]
            lines += [f"{i}. {n}" for i, n in enumerate(lane.get("notes", []), 1)]
            messages = [
                SystemMessage(f"You are the {role} of Bench Corp. Call exactly one tool."),
                HumanMessage("\n".join(lines)),
            ]
            answer = await bound.ainvoke(messages, config={"metadata": {ROLE_METADATA_KEY: role}})
            call = answer.tool_calls[0]
            return {"lanes": {role: {"act": call["name"], "args": call["args"]}}, "steps": 1}

        return think

    def gate(role: str) -> Any:
        async def approve(state: State) -> dict[str, Any]:
            lane = state["lanes"][role]
            decision = interrupt({"role": role, "act": lane["act"], "args": lane["args"]})
            if decision != "approve":
                raise ValueError(f"the benchmark only approves; got {decision!r}")
            return {}

        return approve

    def worker_act(role: str) -> Any:
        async def act(state: State) -> dict[str, Any]:
            lane = state["lanes"][role]
            if lane["act"] == "deliver":
                return {"lanes": {role: {"result": lane["args"]["result"]}}}
            outcome = note(**lane["args"])
            return {
                "lanes": {role: {"notes": [*lane.get("notes", []), f"You called note: {outcome}"]}}
            }

        return act

    async def ceo_act(state: State) -> Command[Any]:
        lane = state["lanes"]["ceo"]
        if lane["act"] == "deliver":
            return Command(update={"result": lane["args"]["result"]}, goto=END)
        briefs = {t["to"]: {"brief": t["brief"]} for t in lane["args"]["tasks"]}
        return Command(update={"lanes": briefs}, goto=[f"{r}_think" for r in briefs])

    async def collect(state: State) -> dict[str, Any]:
        reports = [f"Result from {r}: {state['lanes'][r]['result']}" for r in WORKERS]
        return {"lanes": {"ceo": {"notes": reports}}}

    builder = StateGraph(State)
    builder.add_node("ceo_think", thinker("ceo"))
    if approvals:
        builder.add_node("ceo_gate", gate("ceo"))
    builder.add_node("ceo_act", ceo_act, destinations=(*(f"{r}_think" for r in WORKERS), END))
    builder.add_node("collect", collect)
    builder.add_edge(START, "ceo_think")
    _chain(builder, "ceo", approvals)
    for role in WORKERS:
        builder.add_node(f"{role}_think", thinker(role))
        if approvals:
            builder.add_node(f"{role}_gate", gate(role))
        builder.add_node(f"{role}_act", worker_act(role))
        builder.add_node(f"{role}_done", _noop)
        _chain(builder, role, approvals)
        builder.add_conditional_edges(
            f"{role}_act",
            _after_worker_act(role),
            {"again": f"{role}_think", "done": f"{role}_done"},
        )
    builder.add_edge([f"{r}_done" for r in WORKERS], "collect")
    builder.add_edge("collect", "ceo_think")
    graph: CompiledStateGraph[Any, Any, Any, Any] = builder.compile(checkpointer=checkpointer)
    return graph


def _chain(builder: StateGraph[Any], role: str, approvals: bool) -> None:
    """think → gate → act, or think → act without approvals."""
    if approvals:
        builder.add_edge(f"{role}_think", f"{role}_gate")
        builder.add_edge(f"{role}_gate", f"{role}_act")
    else:
        builder.add_edge(f"{role}_think", f"{role}_act")


async def _noop(state: State) -> dict[str, Any]:
    return {}


def _after_worker_act(role: str) -> Any:
    def route(state: State) -> str:
        return "done" if "result" in state["lanes"][role] else "again"

    return route


async def run_raw_mission(graph: Any, thread_id: str, mission: str) -> str:
    """Run one mission to its end, approving every interrupt as soon as it comes."""
    config = {"configurable": {"thread_id": thread_id}, "recursion_limit": RUN_CONFIG_LIMIT}
    state = await graph.ainvoke({"mission": mission, "lanes": {}, "steps": 0}, config)
    while interrupts := state.get("__interrupt__"):
        state = await graph.ainvoke(Command(resume={i.id: "approve" for i in interrupts}), config)
    return str(state["result"])
