"""`Swarm`: an org chart compiled into a durable LangGraph graph, driven in the background.

Methods return as soon as their change is recorded; runs advance in background tasks. Only one
writer advances a run at a time: an in-process task per run, and across processes a lease in the
runs table whose fencing token grows with every claim (DESIGN §4, trap 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import aiosqlite
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import Runnable, RunnableLambda
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph.state import CompiledStateGraph

from qapten.acts import (
    DELEGATE,
    ActSpec,
    InvalidChoice,
    build_menu,
    single_act_tool,
    unwrap_single_act,
    validate_args,
)
from qapten.board import ROOT_TASK_ID, Board, Task, TaskStatus, new_task
from qapten.budget import BUDGET_ACT, edited_budget
from qapten.context import SwarmContext, new_id
from qapten.errors import ConfigurationError, InvalidDecision, RunFailed, RunNotRetryable
from qapten.graph import DISPATCH, build_graph
from qapten.local_model import embedded_model, is_embedded, model_text_limit, uses_embedded
from qapten.mcp_client import McpServers
from qapten.models import ModelRef, chat_model, close_model
from qapten.orgchart import OrgChart
from qapten.proposals import (
    ALLOWED_DECISIONS,
    DECISION_STATUS,
    Answer,
    Approve,
    Decision,
    Edit,
    Proposal,
    ProposalStatus,
    Reject,
    Revise,
    parse_decision,
    payload_hash,
)
from qapten.roles import child_report
from qapten.store import Event, Run, Store, ToolCall
from qapten.tools import BUILTIN_TOOLS, Tool, resolve_tool_ref, tool_from_callable
from qapten.workspace import Workspace

logger = logging.getLogger(__name__)

FINISHED_RUN = frozenset({"done", "failed", "cancelled"})
RECURSION_LIMIT = 100_000  # Qapten bounds runs itself (max_steps); LangGraph's limit must not.


class Swarm:
    """A company of role agents that proposes while a human decides.

    Build one with `Swarm.from_yaml` (or `Swarm(chart, ...)`); the database opens on first use.
    Close it with `await swarm.close()` or use ``async with swarm:``.
    """

    def __init__(
        self,
        chart: OrgChart,
        *,
        model: BaseChatModel | None = None,
        db: str = "sqlite:///qapten.db",
        tools: Sequence[Tool | Callable[..., Any]] = (),
        workspaces: str | Path | None = None,
        lease_ttl: float = 15.0,
        max_output_retries: int = 2,
        callbacks: Sequence[BaseCallbackHandler] = (),
    ) -> None:
        self.chart = chart
        self._callbacks = list(callbacks)
        self.db = db
        self.lease_ttl = lease_ttl
        self._tools = {**BUILTIN_TOOLS, **{t.name: t for t in map(_as_tool, tools)}}
        self._max_output_retries = max_output_retries
        self._workspaces = Path(workspaces) if workspaces else _default_workspaces(db)
        # Roles that use tools of MCP servers get their menus when the swarm opens (`_open_mcp`):
        # only a running server tells its tools' schemas.
        self._mcp = McpServers(chart.mcp_servers)
        self.menus = {
            name: self._menu(name)
            for name, role in chart.roles.items()
            if not self._mcp.uses(role.tools)
        }
        self._chart_dir = chart.source.parent if chart.source else None
        # The swarm's model, else the chart's: built once and shared by every role without its own.
        self._built_models: list[BaseChatModel] = []  # closed with the swarm; not the caller's
        default = model
        if default is None and chart.model is not None:
            default = self._build_model(chart.model)
        self._default_model = default
        self._models = {name: self._bound_model(name, default) for name in self.menus}
        self._embedded = embedded_model() if uses_embedded(chart, model) else None
        self._embedded_started = False
        self._graph_builder = build_graph(chart)
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{new_id('w')}"
        self._open_lock = asyncio.Lock()
        self._store: Store | None = None
        self._saver_conn: aiosqlite.Connection | None = None
        self._graph: CompiledStateGraph[Board, SwarmContext, Board, Board] | None = None
        self._context: SwarmContext | None = None
        self._advancing: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()

    @classmethod
    def from_yaml(
        cls, path: str | Path, *, tools: Sequence[Tool | Callable[..., Any]] = (), **options: Any
    ) -> Swarm:
        """Load and validate the org chart at `path`, then build the swarm (see `Swarm`)."""
        extra = [_as_tool(t).name for t in tools]
        return cls(OrgChart.from_file(path, extra_tools=extra), tools=tools, **options)

    # -- setup ----------------------------------------------------------------------------------

    def _tool(self, name: str) -> Tool:
        if name not in self._tools:
            self._tools[name] = resolve_tool_ref(name)
        return self._tools[name]

    def _menu(self, role_name: str) -> tuple[ActSpec, ...]:
        reports = [r.name for r in self.chart.reports(role_name)]
        return build_menu(reports, [self._tool(t) for t in self.chart.roles[role_name].tools])

    async def _open_mcp(self) -> None:
        """Start the MCP servers that roles use, then build those roles' menus and models."""
        roles = [name for name, role in self.chart.roles.items() if self._mcp.uses(role.tools)]
        if not roles:
            return
        wanted = {tool for name in roles for tool in self.chart.roles[name].tools}
        self._tools.update(await self._mcp.start(wanted))
        try:
            for name in roles:
                self.menus[name] = self._menu(name)
                self._models[name] = self._bound_model(name, self._default_model)
        except BaseException:
            await self._mcp.close()
            raise

    def _build_model(self, ref: ModelRef) -> BaseChatModel:
        model = chat_model(ref, base_dir=self._chart_dir)
        self._built_models.append(model)
        return model

    def _bound_model(self, role_name: str, default: BaseChatModel | None) -> Any:
        ref = self.chart.roles[role_name].model
        model = default if ref is None else self._build_model(ref)
        if model is None:
            msg = "no model: pass model=... or set 'model:' in the org chart"
            raise ConfigurationError(msg)
        menu = self.menus[role_name]
        if is_embedded(model):
            # llama.cpp forces only a named function, and a tiny model cannot pick among
            # several on its own: one function that unites every act, unwrapped after.
            tool = single_act_tool(menu, max_text=model_text_limit(model))
            bound = model.bind_tools([tool], tool_choice=tool["function"]["name"])
            chain: Runnable[Any, AIMessage] = bound | RunnableLambda(unwrap_single_act)
        else:
            # tool_choice "any" forces exactly one act: small models fail at free tool choice.
            chain = model.bind_tools([spec.as_openai_tool() for spec in menu], tool_choice="any")
        return chain.with_config(callbacks=self._callbacks) if self._callbacks else chain

    async def _ready(
        self,
    ) -> tuple[Store, CompiledStateGraph[Board, SwarmContext, Board, Board], SwarmContext]:
        async with self._open_lock:
            if self._graph is None:
                await self._open_mcp()  # first: a server that fails to start leaves nothing open
                store = await Store.open(self.db)
                path = _sqlite_path(self.db)
                self._saver_conn = await aiosqlite.connect(path, timeout=30)
                saver = AsyncSqliteSaver(self._saver_conn)
                await saver.setup()
                if self._embedded is not None and not self._embedded_started:
                    await self._embedded.start()
                    self._embedded_started = True
                self._store = store
                self._context = SwarmContext(
                    chart=self.chart,
                    store=store,
                    menus=self.menus,
                    models=self._models,
                    workspaces=self._workspaces,
                    max_output_retries=self._max_output_retries,
                )
                self._graph = self._graph_builder.compile(checkpointer=saver)
        assert self._store is not None and self._context is not None
        return self._store, self._graph, self._context

    async def open(self) -> None:
        """Open the database now (otherwise the first call does). Idempotent."""
        await self._ready()

    async def close(self) -> None:
        """Let in-flight steps finish, then close the database connections, and the HTTP
        connections of the models built from the chart (build a new swarm to use them again)."""
        await self.idle()
        if self._saver_conn is not None:
            await self._saver_conn.close()
        if self._store is not None:
            await self._store.close()
        if self._embedded is not None and self._embedded_started:
            self._embedded_started = False
            await self._embedded.stop()
        await self._mcp.close()
        for model in self._built_models:
            await close_model(model)
        self._graph = self._store = self._saver_conn = self._context = None

    async def __aenter__(self) -> Swarm:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def store(self) -> Store:
        if self._store is None:
            msg = "the swarm is not open yet: await any of its methods, or use 'async with swarm'"
            raise RuntimeError(msg)
        return self._store

    # -- public API -----------------------------------------------------------------------------

    async def start(self, mission: str) -> Run:
        """Start a run on `mission`; it advances in the background until it needs a human."""
        if not mission.strip():
            msg = "the mission is empty: say what the company should achieve"
            raise ValueError(msg)
        store, _, _ = await self._ready()
        run = await store.create_run(new_id("r"), self.chart.name, mission.strip())
        self._kick(run.id)
        return run

    async def pending(self, run_id: str | None = None, *, settle: bool = True) -> list[Proposal]:
        """Proposals waiting for a human, oldest first.

        With `settle` (the default) it first lets this process's background steps finish, so that
        a loop of ``pending`` / ``decide`` sees every proposal the swarm is going to make.
        """
        store, _, _ = await self._ready()
        if settle:
            await self.idle(run_id)
        return await store.list_proposals(status=ProposalStatus.PENDING, run_id=run_id)

    async def proposal(self, proposal_id: str) -> Proposal:
        store, _, _ = await self._ready()
        return await store.get_proposal(proposal_id)

    async def decide(
        self, proposal_id: str, decision: str | Decision | dict[str, Any], *, by: str = "human"
    ) -> Proposal:
        """Record a decision (compare-and-set) and let the run advance in the background.

        Raises `ProposalAlreadyDecided` if someone decided first (nothing changes), and
        `InvalidDecision` if the decision does not fit the proposal.
        """
        store, _, _ = await self._ready()
        proposal = await store.get_proposal(proposal_id)
        chosen = parse_decision(decision)
        if chosen.decision not in ALLOWED_DECISIONS[proposal.kind]:
            allowed = ", ".join(sorted(ALLOWED_DECISIONS[proposal.kind]))
            msg = f"a {proposal.kind.value} proposal takes {allowed}; not {chosen.decision!r}"
            raise InvalidDecision(msg)
        fields: dict[str, Any] = {}
        match chosen:
            case Approve():
                fields = {
                    "decided_payload": proposal.payload,
                    "approved_hash": proposal.payload_hash,
                }
            case Edit(payload=payload):
                clean = self._validate_edit(proposal, payload)
                fields = {"decided_payload": clean, "approved_hash": payload_hash(clean)}
            case Reject(feedback=text) | Revise(feedback=text) | Answer(text=text):
                fields = {"feedback": text}
        decided = await store.decide(
            proposal_id, status=DECISION_STATUS[chosen.decision], decided_by=by, **fields
        )
        self._kick(decided.run_id)
        return decided

    def _validate_edit(self, proposal: Proposal, payload: dict[str, Any]) -> dict[str, Any]:
        if proposal.act == BUDGET_ACT:
            return edited_budget(proposal, payload)
        spec = next(s for s in self.menus[proposal.role] if s.name == proposal.act)
        reports = [r.name for r in self.chart.reports(proposal.role)]
        try:
            return validate_args(spec, payload, reports)
        except InvalidChoice as exc:
            raise InvalidDecision(str(exc)) from exc

    async def cancel(self, run_id: str, *, by: str = "human") -> Run:
        """Stop a run: its pending proposals are cancelled and no further step starts."""
        store, _, _ = await self._ready()
        run = await store.get_run(run_id)
        if run.status not in FINISHED_RUN:
            await store.cancel_pending(run_id, by=by)
            await store.set_run_status(run_id, "cancelled", error=f"cancelled by {by}")
        return await store.get_run(run_id)

    async def retry(self, run_id: str, *, by: str = "human") -> Run:
        """Take a failed run up again where it stopped; returns it ``running``.

        The failed tasks on the run's path to failure think again (see `_reopen`). Done steps
        are not redone: proposals are found again by (task, step) and tools replay their
        journal, so no model call or side effect repeats. Limits still hold: a task that failed
        on a step or revision limit fails again at once. Raises `RunNotRetryable` when the run
        is not failed (or someone retried it first).
        """
        store, graph, _ = await self._ready()
        if (run := await store.get_run(run_id)).status != "failed":
            raise RunNotRetryable(run_id, run.status)
        # A lease of its own, not this process's: in-process steps wait for it like others do.
        owner = f"{self._owner}:retry:{new_id('x')}"
        while True:
            token = await store.acquire_lease(run_id, owner, self.lease_ttl)
            if token is not None:
                break
            await asyncio.sleep(min(0.2, self.lease_ttl / 10))
        try:
            if (run := await store.get_run(run_id)).status != "failed":
                raise RunNotRetryable(run_id, run.status)
            config = _config(run_id)
            board = cast(Board, (await graph.aget_state(config)).values)
            patches = _reopen(board, await self._last_delegations(run_id)) if board else {}
            if patches:
                update = cast(Board, {"tasks": patches})
                await graph.aupdate_state(config, update, as_node=DISPATCH)
            await store.retry_run(run_id, by=by, tasks=list(patches))
        finally:
            await store.release_lease(run_id, owner, token)
        self._kick(run_id)
        return await store.get_run(run_id)

    async def _last_delegations(self, run_id: str) -> dict[str, int]:
        """Task id → how many tasks its latest carried-out delegation made."""
        sizes: dict[str, int] = {}
        for proposal in await self.store.list_proposals(run_id=run_id):  # oldest first
            if proposal.act == DELEGATE and proposal.status.executes:
                payload = proposal.decided_payload or proposal.payload
                sizes[proposal.task_id] = len(payload["tasks"])
        return sizes

    async def run(self, run_id: str) -> Run:
        store, _, _ = await self._ready()
        return await store.get_run(run_id)

    async def runs(self, status: str | None = None) -> list[Run]:
        store, _, _ = await self._ready()
        return await store.list_runs(status)

    async def tasks(self, run_id: str) -> list[Task]:
        """The run's task board, in creation order (the root first)."""
        _, graph, _ = await self._ready()
        snapshot = await graph.aget_state(_config(run_id))
        board = snapshot.values.get("tasks", {})
        return list(board.values())

    async def events(self, run_id: str | None = None, *, after: int = 0) -> list[Event]:
        store, _, _ = await self._ready()
        return await store.events(run_id=run_id, after=after)

    def workspace(self, run_id: str) -> Workspace:
        """The folder where the run's tools read and write files."""
        return Workspace(self._workspaces / run_id)

    async def tool_calls(self, run_id: str) -> list[ToolCall]:
        """The tool journal of a run: what ran, with what arguments and outcome."""
        store, _, _ = await self._ready()
        return await store.tool_calls(run_id)

    # A plain `timeout` argument reads better here than asking callers for asyncio.timeout().
    async def wait(
        self,
        run_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        poll: float = 0.05,
    ) -> Run:
        """Wait until the run is done; raise `RunFailed` if it failed or was cancelled.

        A run that waits for a human keeps this waiting: decide its proposals meanwhile.
        """
        store, _, _ = await self._ready()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            await self.idle(run_id)
            run = await store.get_run(run_id)
            if run.status == "done":
                return run
            if run.status in FINISHED_RUN:
                raise RunFailed(run.id, run.status, run.error)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} is still {run.status} after {timeout} s")
            await asyncio.sleep(poll)

    async def resume(self, run_id: str) -> None:
        """Advance a run now: after a restart, or to pick up decisions made by another process."""
        await self._ready()
        self._kick(run_id)

    async def resume_all(self) -> list[str]:
        """Advance every run that has work in hand (status ``running``), e.g. after a crash.

        A run is ``running`` from its start, and again from each recorded decision, until it
        waits for a human or ends; so these are exactly the runs a dead process left behind.
        """
        store, _, _ = await self._ready()
        runs = [run.id for run in await store.list_runs("running")]
        for run_id in runs:
            self._kick(run_id)
        return runs

    async def idle(self, run_id: str | None = None) -> None:
        """Wait until this process has no step in flight (for `run_id`, or for any run)."""
        while True:
            busy = [t for r, t in self._advancing.items() if not t.done() and run_id in (None, r)]
            if not busy:
                return
            await asyncio.wait(busy)

    # -- background advancing ---------------------------------------------------------------------

    def _kick(self, run_id: str) -> None:
        running = self._advancing.get(run_id)
        if running is not None and not running.done():
            self._again.add(run_id)  # the running loop goes round once more and sees the change
            return
        self._advancing[run_id] = asyncio.create_task(self._advance_loop(run_id))

    async def _advance_loop(self, run_id: str) -> None:
        while True:
            self._again.discard(run_id)
            try:
                await self._advance(run_id)
            except Exception as exc:
                logger.exception("run %s failed", run_id)
                await self.store.set_run_status(
                    run_id, "failed", error=f"{type(exc).__name__}: {exc}"
                )
                return
            if run_id not in self._again:
                return

    async def _claim(self, run_id: str) -> int | None:
        """Wait for the run's lease; None when the run finished meanwhile."""
        store = self.store
        while True:
            token = await store.acquire_lease(run_id, self._owner, self.lease_ttl)
            if token is not None:
                return token
            if (await store.get_run(run_id)).status in FINISHED_RUN:
                return None
            await asyncio.sleep(min(0.2, self.lease_ttl / 10))

    async def _advance(self, run_id: str) -> None:
        store, graph, context = await self._ready()
        if (await store.get_run(run_id)).status in FINISHED_RUN:
            return
        token = await self._claim(run_id)
        if token is None:
            return
        heartbeat = asyncio.create_task(self._keep_lease(run_id, token, asyncio.current_task()))
        try:
            config = _config(run_id)
            snapshot = await graph.aget_state(config)
            if snapshot.next:
                # The last process stopped inside a superstep: finish that work first.
                await graph.ainvoke(None, config, context=context)
            if not snapshot.values:
                run = await store.get_run(run_id)
                board = Board(
                    mission=run.mission,
                    root=ROOT_TASK_ID,
                    steps=0,
                    tasks={ROOT_TASK_ID: new_task(ROOT_TASK_ID, self.chart.root.name, run.mission)},
                )
                await graph.ainvoke(board, config, context=context)
            else:
                # An empty update wakes `dispatch`, which reads new decisions from the store.
                await graph.ainvoke(cast(Board, {"tasks": {}}), config, context=context)
            if await self._settle(run_id):
                self._again.add(run_id)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await store.release_lease(run_id, self._owner, token)

    async def _keep_lease(self, run_id: str, token: int, worker: asyncio.Task[Any] | None) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            if not await self.store.renew_lease(run_id, self._owner, token, self.lease_ttl):
                logger.error("run %s: lease lost to another writer; stopping this one", run_id)
                if worker is not None:
                    worker.cancel()
                return

    async def _settle(self, run_id: str) -> bool:
        """Set the run's status from its board once the graph has nothing left to do.

        Returns True when the run must go round again: a decision landed while `dispatch` was
        looking the other way (it read the proposal as pending a moment before).
        """
        store, graph, _ = await self._ready()
        if (await store.get_run(run_id)).status in FINISHED_RUN:
            return False
        board = (await graph.aget_state(_config(run_id))).values
        root = board["tasks"][board["root"]]
        if root["status"] == TaskStatus.DONE.value:
            await store.set_run_status(run_id, "done", result=root["result"])
            return False
        if root["status"] == TaskStatus.FAILED.value:
            await store.set_run_status(run_id, "failed", error=root["error"])
            return False
        waiting = [
            t["proposal"]
            for t in board["tasks"].values()
            if t["status"] == TaskStatus.WAITING.value and t["proposal"]
        ]
        proposals = (await store.get_proposals(waiting)).values()
        if any(p.status is not ProposalStatus.PENDING for p in proposals):
            return True
        if proposals:
            await store.set_run_status(run_id, "waiting")
            return False
        stuck = {t["id"]: t["status"] for t in board["tasks"].values()}
        await store.set_run_status(run_id, "failed", error=f"no task can move: {stuck}")
        return False


def _reopen(board: Board, delegations: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Board patches that put a failed run's failed work back in hand, for `Swarm.retry`.

    From the root down along the failure: a failed task thinks again; when children of its
    latest delegation failed too, they are reopened and the task waits for them once more,
    its notes without their failure reports. A manager that failed after hearing "child failed"
    is so taken back to before it heard it, and learns the retried child's result instead.
    Failures a manager acted on (by delegating again) stay: the new children replaced them.
    """
    tasks = board["tasks"]
    patches: dict[str, dict[str, Any]] = {}

    def reopen(task: Task) -> bool:
        if task["status"] == TaskStatus.DELEGATED.value:
            for child in task["awaiting"]:
                reopen(tasks[child])
            return False
        if task["status"] != TaskStatus.FAILED.value:
            return False
        latest = task["children"][len(task["children"]) - delegations.get(task["id"], 0) :]
        again = [child for child in latest if reopen(tasks[child])]
        told = {child_report(tasks[child]) for child in again}
        patches[task["id"]] = {
            "status": (TaskStatus.DELEGATED if again else TaskStatus.THINKING).value,
            "awaiting": again,
            "notes": [note for note in task["notes"] if note not in told],
            "error": None,
        }
        return True

    reopen(tasks[board["root"]])
    return patches


def _config(run_id: str) -> Any:
    return {"configurable": {"thread_id": run_id}, "recursion_limit": RECURSION_LIMIT}


def _as_tool(tool: Tool | Callable[..., Any]) -> Tool:
    return tool if isinstance(tool, Tool) else tool_from_callable(tool)


def _sqlite_path(db: str) -> str:
    if not db.startswith("sqlite:///"):
        msg = f"unsupported database {db!r}: use sqlite:///FILE (PostgreSQL comes with scale-out)"
        raise ConfigurationError(msg)
    return db.removeprefix("sqlite:///")


def _default_workspaces(db: str) -> Path:
    """Beside the database file: qapten.db → qapten-workspaces/."""
    path = Path(_sqlite_path(db))
    return path.with_name(path.stem + "-workspaces")
