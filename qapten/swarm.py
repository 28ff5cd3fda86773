"""`Swarm`: an org chart compiled into a durable LangGraph graph, driven in the background.

Methods return as soon as their change is recorded; runs advance in background tasks. Only one
writer advances a run at a time: an in-process task per run, and across processes a lease in the
runs table whose fencing token grows with every claim (DESIGN §4, trap 2).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langgraph.graph.state import CompiledStateGraph

from qapten.acts import (
    ActSpec,
    InvalidChoice,
    build_menu,
    validate_args,
)
from qapten.board import Board, Task, with_notes
from qapten.budget import BUDGET_ACT, edited_budget
from qapten.context import SwarmContext, new_id
from qapten.deadlines import Sweeper, apply_deadlines, terms_for
from qapten.driver import RunDriver, run_config
from qapten.errors import InvalidDecision, RunFailed, RunNotRetryable
from qapten.foreground import Foreground
from qapten.graph import DISPATCH, build_graph
from qapten.local_model import EmbeddedModel, embedded_model, uses_embedded
from qapten.mcp_client import McpServers
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
    check_quorum,
    parse_decision,
    payload_hash,
)
from qapten.recovery import reopen
from qapten.role_models import RoleModels
from qapten.storage import Storage, default_workspaces, open_storage
from qapten.store import FINISHED_RUN, Event, Run, Store, ToolCall
from qapten.tools import BUILTIN_TOOLS, Tool, resolve_tool_ref, tool_from_callable
from qapten.workspace import Workspace

if TYPE_CHECKING:
    from qapten.queue import RunQueue

logger = logging.getLogger(__name__)


class Swarm:
    """A company of role agents that proposes while a human decides.

    Build one with `Swarm.from_yaml` (or `Swarm(chart, ...)`); the database opens on first use.
    Close it with `await swarm.close()` or use ``async with swarm:``. `clock` (returning aware
    UTC datetimes) replaces the real one for every time recorded and every deadline, in tests;
    `sweep_interval` is how often deadlines are applied in the background (None: never).
    With a `queue` (PostgreSQL), `qapten worker` processes advance the runs instead of this
    process; `team` names the swarm's org chart to them when they serve several.
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
        clock: Callable[[], datetime] | None = None,
        sweep_interval: float | None = 5.0,
        queue: RunQueue | None = None,
        team: str = "",
    ) -> None:
        self.chart = chart
        self.db = db
        self.team = team
        # With a queue, runs are advanced by `qapten worker` processes (qapten.queue): this
        # process records changes and enqueues the runs they concern. Without, it advances them.
        self.queue = queue
        self.lease_ttl = lease_ttl
        # The requests this process is answering, which the steps of its runs let go first
        # (`create_app` marks them; see qapten.foreground).
        self.foreground = Foreground()
        self._tools = {**BUILTIN_TOOLS, **{t.name: t for t in map(_as_tool, tools)}}
        self._max_output_retries = max_output_retries
        self._workspaces = Path(workspaces) if workspaces else default_workspaces(db)
        # Roles that use tools of MCP servers get their menus when the swarm opens (`_open_mcp`):
        # only a running server tells its tools' schemas.
        self._mcp = McpServers(chart.mcp_servers)
        self.menus = {
            name: self._menu(name)
            for name, role in chart.roles.items()
            if not self._mcp.uses(role.tools)
        }
        self._role_models = RoleModels(chart, model, callbacks=callbacks)
        self._models = {
            name: self._role_models.bind(name, menu) for name, menu in self.menus.items()
        }
        self._embedded = embedded_model() if uses_embedded(chart, model) else None
        self._embedded_started = False
        self._embedded_lock = asyncio.Lock()
        self._graph_builder = build_graph(chart)
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{new_id('w')}"
        self._open_lock = asyncio.Lock()
        self._store: Store | None = None
        self._storage: Storage | None = None
        self._graph: CompiledStateGraph[Board, SwarmContext, Board, Board] | None = None
        self._context: SwarmContext | None = None
        self._driver = RunDriver(chart, owner=self._owner, lease_ttl=lease_ttl, ready=self._ready)
        self._clock = clock
        # Deadlines are applied before each decision and, in the background, every
        # `sweep_interval` seconds (None: only when `expire_due` is called).
        self._deadlines = any(role.deadlines for role in chart.roles.values())
        self._sweeper = (
            Sweeper(self.expire_due, sweep_interval) if self._deadlines and sweep_interval else None
        )

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
                self._models[name] = self._role_models.bind(name, self.menus[name])
        except BaseException:
            await self._mcp.close()
            raise

    async def _ready(
        self,
    ) -> tuple[Store, CompiledStateGraph[Board, SwarmContext, Board, Board], SwarmContext]:
        async with self._open_lock:
            if self._graph is None:
                # Each part opened is closed again if a later one fails: nothing is left half-open.
                await self._open_mcp()
                try:
                    storage = await open_storage(self.db)
                    try:
                        if self.queue is not None:
                            # After the store, which says at once if the database is out of
                            # reach. Idempotent; whoever made the queue closes it.
                            await self.queue.open()
                        # With a queue, workers call the model: a server that only records
                        # and enqueues never starts it (a worker's swarm does, in `advance`).
                        if self.queue is None:
                            await self._start_embedded()
                    except BaseException:
                        await storage.close()
                        raise
                except BaseException:
                    await self._mcp.close()
                    raise
                self._storage = storage
                self._store = store = storage.store
                if self._clock is not None:
                    store.clock = self._clock
                store.terms = partial(terms_for, self.chart)
                self._context = SwarmContext(
                    chart=self.chart,
                    store=store,
                    menus=self.menus,
                    models=self._models,
                    workspaces=self._workspaces,
                    max_output_retries=self._max_output_retries,
                    foreground=self.foreground,
                )
                self._graph = self._graph_builder.compile(checkpointer=storage.checkpointer)
                if self._sweeper is not None:
                    self._sweeper.start()
        assert self._store is not None and self._context is not None
        return self._store, self._graph, self._context

    async def _start_embedded(self) -> None:
        async with self._embedded_lock:
            if self._embedded is not None and not self._embedded_started:
                await self._embedded.start()
                self._embedded_started = True

    async def open(self) -> None:
        """Open the database now (otherwise the first call does). Idempotent."""
        await self._ready()

    async def close(self) -> None:
        """Let in-flight steps finish, then close the database connections, and the HTTP
        connections of the models built from the chart (build a new swarm to use them again)."""
        if self._sweeper is not None:
            await self._sweeper.stop()
        await self.idle()
        if self._storage is not None:
            await self._storage.close()
        if self._embedded is not None and self._embedded_started:
            self._embedded_started = False
            await self._embedded.stop()
        await self._mcp.close()
        await self._role_models.close()
        self._graph = self._store = self._storage = self._context = None

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
    def embedded(self) -> EmbeddedModel | None:
        """The embedded model's server, when a role uses it; it starts when the swarm opens."""
        return self._embedded

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
        await self._kick(run.id)
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
        self,
        proposal_id: str,
        decision: str | Decision | dict[str, Any],
        *,
        by: str = "human",
        check: Callable[[Proposal], None] | None = None,
    ) -> Proposal:
        """Record a decision (compare-and-set) and let the run advance in the background.

        Raises `ProposalAlreadyDecided` if someone decided first, or its deadline passed
        (nothing changes), and `InvalidDecision` if the decision does not fit the proposal.
        An act with a quorum takes decisions from its named approvers only (`NotAnApprover`);
        an approval is recorded and the proposal stays pending until the quorum is reached,
        each approver counted once (`AlreadyApproved`); edits are refused.

        `check` is called with the proposal before anything is recorded (whether `by` may
        decide it, say); what it raises propagates and nothing changes.
        """
        store, _, _ = await self._ready()
        await self.expire_due()  # a deadline that passed wins over a decision that comes after
        chosen = parse_decision(decision)

        def vet(proposal: Proposal) -> None:
            if check is not None:
                check(proposal)
            if chosen.decision not in ALLOWED_DECISIONS[proposal.kind]:
                allowed = ", ".join(sorted(ALLOWED_DECISIONS[proposal.kind]))
                msg = f"a {proposal.kind.value} proposal takes {allowed}; not {chosen.decision!r}"
                raise InvalidDecision(msg)
            check_quorum(proposal, chosen.decision, by)
            if proposal.quorum is not None and isinstance(chosen, Approve):
                raise _CountsTowardsQuorum

        # One statement decides and returns the proposal, which `vet` then checks inside the
        # transaction (a refusal undoes it): no read first, except to validate an edit.
        fields: dict[str, Any] = {"as_proposed": isinstance(chosen, Approve)}
        match chosen:
            case Edit(payload=payload):
                proposal = await store.get_proposal(proposal_id)
                vet(proposal)
                clean = self._validate_edit(proposal, payload)
                fields = {"decided_payload": clean, "approved_hash": payload_hash(clean)}
            case Reject(feedback=text) | Revise(feedback=text) | Answer(text=text):
                fields = {"feedback": text}
        status = DECISION_STATUS[chosen.decision]
        try:
            decided = await store.decide(
                proposal_id, status=status, decided_by=by, vet=vet, **fields
            )
        except _CountsTowardsQuorum:  # vetted already: the approval is one of several
            decided = await store.approve(proposal_id, by=by)
            if decided.status is ProposalStatus.PENDING:
                return decided
        await self._kick(decided.run_id)
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

    async def expire_due(self) -> None:
        """Apply the deadlines that have passed: reminders, expiry, escalation (see
        `qapten.deadlines`). The swarm does it by itself; call it after moving a test clock."""
        store, _, _ = await self._ready()
        if not self._deadlines:
            return  # a chart without deadlines has nothing to expire: no query on each decision
        for run_id in await apply_deadlines(store, self.chart):
            await self._kick(run_id)

    async def cancel(self, run_id: str, *, by: str = "human") -> Run:
        """Stop a run: its pending proposals are cancelled and no further step starts."""
        store, _, _ = await self._ready()
        run = await store.get_run(run_id)
        if run.status not in FINISHED_RUN:
            # The run first, so that a proposal made meanwhile is born cancelled (create_proposal).
            await store.set_run_status(run_id, "cancelled", error=f"cancelled by {by}")
            await store.cancel_pending(run_id, by=by)
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
        token = await self._driver.claim(run_id, owner, until_finished=False)
        assert token is not None
        try:
            if (run := await store.get_run(run_id)).status != "failed":
                raise RunNotRetryable(run_id, run.status)
            config = run_config(run_id)
            board = cast(Board, (await graph.aget_state(config)).values)
            patches = await reopen(store, run_id, board) if board else {}
            if patches:
                update = cast(Board, {"tasks": patches})
                await graph.aupdate_state(config, update, as_node=DISPATCH)
            await store.retry_run(run_id, by=by, tasks=list(patches))
        finally:
            await store.release_lease(run_id, owner, token)
        await self._kick(run_id)
        return await store.get_run(run_id)

    async def run(self, run_id: str) -> Run:
        store, _, _ = await self._ready()
        return await store.get_run(run_id)

    async def runs(self, status: str | None = None) -> list[Run]:
        store, _, _ = await self._ready()
        return await store.list_runs(status)

    async def tasks(self, run_id: str) -> list[Task]:
        """The run's task board, in creation order (the root first), each task with its notes."""
        store, graph, _ = await self._ready()
        snapshot = await graph.aget_state(run_config(run_id))
        board = snapshot.values.get("tasks", {})
        return with_notes(board.values(), await store.run_notes(run_id))

    async def tokens(self, run_id: str) -> dict[str, int]:
        """The tokens each role's model calls spent in the run, from the models' usage data."""
        store, _, _ = await self._ready()
        return await store.tokens_by_role(run_id)

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
        await self._kick(run_id)

    async def resume_all(self) -> list[str]:
        """Advance every run that has work in hand (status ``running``), e.g. after a crash.

        A run is ``running`` from its start, and again from each recorded decision, until it
        waits for a human or ends; so these are exactly the runs a dead process left behind.
        """
        store, _, _ = await self._ready()
        runs = [run.id for run in await store.list_runs("running")]
        for run_id in runs:
            await self._kick(run_id)
        return runs

    async def advance(self, run_id: str) -> None:
        """Advance `run_id` in this process until it waits for a human or ends (what a worker
        does with a job of the queue). Cancelled, it stops the run between two writes, with its
        lease released, for another process to take up."""
        await self._ready()
        await self._start_embedded()
        self._driver.kick(run_id)
        try:
            await self._driver.idle(run_id)
        except asyncio.CancelledError:
            await self._driver.stop(run_id)
            raise

    async def _kick(self, run_id: str) -> None:
        if self.queue is not None:
            await self.queue.enqueue(self.team, run_id)
        else:
            self._driver.kick(run_id)

    async def idle(self, run_id: str | None = None) -> None:
        """Wait until this process has no step in flight (for `run_id`, or for any run)."""
        await self._driver.idle(run_id)


def _as_tool(tool: Tool | Callable[..., Any]) -> Tool:
    return tool if isinstance(tool, Tool) else tool_from_callable(tool)


class _CountsTowardsQuorum(Exception):
    """An approval of an act with a quorum: it is counted (`Store.approve`), not decided."""
