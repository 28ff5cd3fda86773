"""Advancing runs in the background, one writer per run.

In a process, one asyncio task per run; across processes, a lease in the runs table whose fencing
token grows with every claim (DESIGN §4, trap 2). A run is advanced until the graph has nothing
left to do, then its status is settled from its board: done, failed, or waiting for a human.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from langgraph.graph.state import CompiledStateGraph

from qapten.board import ROOT_TASK_ID, Board, TaskStatus, new_task
from qapten.context import SwarmContext
from qapten.orgchart import OrgChart
from qapten.store import FINISHED_RUN, Store

logger = logging.getLogger(__name__)

RECURSION_LIMIT = 100_000  # Qapten bounds runs itself (max_steps); LangGraph's limit must not.

Graph = CompiledStateGraph[Board, SwarmContext, Board, Board]
Ready = Callable[[], Awaitable[tuple[Store, Graph, SwarmContext]]]


def run_config(run_id: str) -> Any:
    """The LangGraph config of a run: its thread is the run."""
    return {"configurable": {"thread_id": run_id}, "recursion_limit": RECURSION_LIMIT}


class RunDriver:
    """Advances runs in background tasks of this process, each under the run's lease."""

    def __init__(self, chart: OrgChart, *, owner: str, lease_ttl: float, ready: Ready) -> None:
        self.chart = chart
        self.lease_ttl = lease_ttl
        self._owner = owner
        self._ready = ready
        self._advancing: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()

    async def idle(self, run_id: str | None = None) -> None:
        """Wait until this process has no step in flight (for `run_id`, or for any run)."""
        while True:
            busy = [t for r, t in self._advancing.items() if not t.done() and run_id in (None, r)]
            if not busy:
                return
            await asyncio.wait(busy)

    async def stop(self, run_id: str) -> None:
        """Stop advancing `run_id` now (its lease is released as the task unwinds)."""
        self._again.discard(run_id)
        running = self._advancing.get(run_id)
        if running is not None and not running.done():
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running

    def kick(self, run_id: str) -> None:
        """Advance `run_id` in the background (once more, if it is being advanced already)."""
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
                store, _, _ = await self._ready()
                await store.set_run_status(run_id, "failed", error=f"{type(exc).__name__}: {exc}")
                return
            if run_id not in self._again:
                return

    async def claim(
        self, run_id: str, owner: str | None = None, *, until_finished: bool = True
    ) -> int | None:
        """Wait for the run's lease; None when the run finished meanwhile (`until_finished`)."""
        store, _, _ = await self._ready()
        while True:
            token = await store.acquire_lease(
                run_id, owner or self._owner, self.lease_ttl, unless_finished=until_finished
            )
            if token is not None:
                return token
            if until_finished and (await store.get_run(run_id)).status in FINISHED_RUN:
                return None
            await asyncio.sleep(min(0.2, self.lease_ttl / 10))

    async def _advance(self, run_id: str) -> None:
        store, graph, context = await self._ready()
        await context.foreground.turn()  # requests being answered go first (qapten.foreground)
        token = await self.claim(run_id)
        if token is None:
            return
        heartbeat = asyncio.create_task(self._keep_lease(run_id, token, asyncio.current_task()))
        try:
            config = run_config(run_id)
            # The board is saved when the invocation ends, not at every superstep: the store
            # records what each step did (proposals by task and step, the tool journal, notes
            # by key), so a crash only makes the lost steps replay, with no model call or side
            # effect twice. A superstep's checkpoint would cost more than the step itself.
            invoke: dict[str, Any] = {"context": context, "durability": "exit"}
            snapshot = await graph.aget_state(config)
            if snapshot.tasks:
                # The last process stopped inside a superstep: finish that work first. Test
                # `tasks`, not `next`: a task whose writes were saved before the crash is left
                # out of `next` (its writes already show in `values`) although the superstep
                # was never checkpointed, and new input would throw those writes away; for the
                # first superstep, they are the whole board.
                await graph.ainvoke(None, config, **invoke)
                snapshot = await graph.aget_state(config)  # the board exists now: never redo it
            if not snapshot.values:
                run = await store.get_run(run_id)
                update = Board(
                    mission=run.mission,
                    root=ROOT_TASK_ID,
                    steps=0,
                    tasks={ROOT_TASK_ID: new_task(ROOT_TASK_ID, self.chart.root.name, run.mission)},
                )
            else:
                # An empty update wakes `dispatch`, which reads new decisions from the store.
                update = cast(Board, {"tasks": {}})
            board = cast(Board, await graph.ainvoke(update, config, **invoke))
            if await self._settle(run_id, board):
                self._again.add(run_id)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await store.release_lease(run_id, self._owner, token)

    async def _keep_lease(self, run_id: str, token: int, worker: asyncio.Task[Any] | None) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            store, _, _ = await self._ready()
            if not await store.renew_lease(run_id, self._owner, token, self.lease_ttl):
                logger.error("run %s: lease lost to another writer; stopping this one", run_id)
                if worker is not None:
                    worker.cancel()
                return

    async def _settle(self, run_id: str, board: Board) -> bool:
        """Set the run's status from its board (as the graph left it: it has nothing left to
        do). Returns True when the run must go round again: a decision landed while `dispatch`
        was looking the other way (it read the proposal as pending a moment before).
        """
        store, _, _ = await self._ready()
        if (await store.get_run(run_id)).status in FINISHED_RUN:
            return False
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
        if waiting:
            # A compare-and-set: a decision that landed since `dispatch` read the proposals
            # keeps the run running (a crash now must not leave it asleep); it goes round again.
            return not await store.park_run(run_id, waiting)
        stuck = {t["id"]: t["status"] for t in board["tasks"].values()}
        await store.set_run_status(run_id, "failed", error=f"no task can move: {stuck}")
        return False
