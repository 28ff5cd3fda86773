"""P2: approve → resume latency (decided → the role's next node starts), by pending count."""

from __future__ import annotations

import tempfile
import time
from contextlib import AsyncExitStack
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.tracers.context import register_configure_hook

from bench.common import qapten_swarm, ratio, solo_chart, solo_model
from bench.report import Row
from bench.seed import seed_pending
from bench.sizes import Sizes
from bench.stats import median, ms, percentile
from qapten import Swarm

TARGET_P99 = 0.025
FLAT = 1.5
"""Flat in the pending count: p99 at the largest count <= 1.5x p99 at the smallest."""
WARM_UP = 3
"""Decisions made before timing at each count: imports, compiled queries and caches warm up."""
MISSION = "Publish the findings of the audit, each one approved."
ROLE = "ceo"


class NodeStarts(BaseCallbackHandler):
    """When each run of one graph node starts, from LangChain's callbacks.

    The node's own start, not something inside it (such as the tool being called): what the
    node does first — read the proposal, open the tool journal — is the work resumed, not the
    wait for it. A hook costs a little on every node (the callback runs); it is the honest
    side of the error: it adds to the latency measured, never takes from it.
    """

    run_inline = True
    """Called in the event loop as the node starts, not later from a thread pool."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.starts: list[float] = []

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: dict[str, Any] | Any,
        *,
        metadata: dict[str, Any] | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if name == self.node and (metadata or {}).get("langgraph_node") == self.node:
            self.starts.append(time.perf_counter())

    def first_after(self, moment: float) -> float:
        return next(t for t in self.starts if t >= moment)


# The swarm builds its graph config itself; a configure hook puts the handler into every run
# started in this context (the swarm's background tasks inherit it), without touching Qapten.
_handler: ContextVar[NodeStarts | None] = ContextVar("qapten_bench_node_starts", default=None)
register_configure_hook(_handler, inheritable=True)


@dataclass
class Timings:
    resumed: list[float] = field(default_factory=list)
    """Seconds from calling `decide` to the node that acts on the decision starting."""
    recorded: list[float] = field(default_factory=list)
    """Seconds from calling `decide` to its return (the decision recorded): a part of the above."""


async def measure(sizes: Sizes) -> list[Row]:
    timings = await resume_latencies(sizes.pending_counts, sizes.resume_samples)
    rows: list[Row] = []
    for count, timed in timings.items():
        values = timed.resumed
        p50, p99 = median(values), percentile(values, 99)
        numbers = {
            "pending": count,
            "samples": len(values),
            "p50_s": p50,
            "p99_s": p99,
            "decide_p50_s": median(timed.recorded),
            "decide_p99_s": percentile(timed.recorded, 99),
        }
        rows.append(
            Row(
                "P2",
                f"approve → resume, {count:,} pending",
                f"p50 {ms(p50)}, p99 {ms(p99)} ({len(values)} decisions)",
                f"p99 <= {ms(TARGET_P99)}",
                p99 <= TARGET_P99,
                numbers,
            )
        )
    smallest, largest = min(timings), max(timings)
    p99_of = {count: percentile(timings[count].resumed, 99) for count in (smallest, largest)}
    growth = ratio(p99_of[largest], p99_of[smallest])
    median_growth = ratio(median(timings[largest].resumed), median(timings[smallest].resumed))
    rows.append(
        Row(
            "P2",
            "approve → resume, flat in the pending count",
            f"p99 at {largest:,} pending = {growth:.2f}x p99 at {smallest:,}"
            f" (p50: {median_growth:.2f}x)",
            f"<= {FLAT:.1f}x",
            growth <= FLAT,
            {
                "smallest": smallest,
                "largest": largest,
                "p99_ratio": growth,
                "p50_ratio": median_growth,
            },
        )
    )
    return rows


async def resume_latencies(counts: tuple[int, ...], samples: int) -> dict[int, Timings]:
    """For each pending count, the timings of `samples` approvals of one long task's tool
    calls, in a database holding that many other proposals.

    One swarm per count, all open at once, decided in turn: each round times one decision at
    every count (in a rotating order), so a moment of the machine's falls on all of them
    alike instead of on whichever count happened to be measured then.
    """
    starts = NodeStarts(ROLE)
    token = _handler.set(starts)
    calls = WARM_UP + samples
    try:
        async with AsyncExitStack() as stack:
            runs: dict[int, tuple[Swarm, str]] = {}
            for count in counts:
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="qapten-bench-"))
                folder = Path(tmp)
                await seed_pending(f"sqlite:///{folder / 'qapten.db'}", count)
                org = solo_chart(calls=calls, action="approve")
                swarm = qapten_swarm(folder, org=org, scripted=solo_model(calls))
                await stack.enter_async_context(swarm)
                runs[count] = (swarm, (await swarm.start(MISSION)).id)
            timings = {count: Timings() for count in counts}
            for i in range(calls):
                turn = i % len(counts)
                for count in (*counts[turn:], *counts[:turn]):
                    swarm, run_id = runs[count]
                    decided, recorded = await _approve_next(swarm, run_id)
                    if i >= WARM_UP:
                        timings[count].resumed.append(starts.first_after(decided) - decided)
                        timings[count].recorded.append(recorded - decided)
            for swarm, run_id in runs.values():
                done = await swarm.wait(run_id)
                if done.result is None:
                    msg = f"the timed run ended {done.status} without its deliverable"
                    raise RuntimeError(msg)
    finally:
        _handler.reset(token)
    return timings


async def _approve_next(swarm: Swarm, run_id: str) -> tuple[float, float]:
    """Approve the run's one pending proposal; (when decided, when recorded) by perf_counter."""
    [proposal] = await swarm.pending(run_id)
    decided = time.perf_counter()
    await swarm.decide(proposal.id, "approve", by="bench")
    recorded = time.perf_counter()
    # Wait for the step to finish (and the next proposal to be made) before reading when it
    # started: nothing else runs meanwhile to blur the figure.
    await swarm.idle(run_id)
    return decided, recorded
