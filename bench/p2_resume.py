"""P2: approve → resume latency (decided → the role's next node starts), by pending count."""

from __future__ import annotations

import tempfile
import time
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
    latencies: dict[int, list[float]] = {}
    rows: list[Row] = []
    for count in sizes.pending_counts:
        timings = await resume_latencies(count, sizes.resume_samples)
        latencies[count] = values = timings.resumed
        p50, p99 = median(values), percentile(values, 99)
        numbers = {
            "pending": count,
            "samples": len(values),
            "p50_s": p50,
            "p99_s": p99,
            "decide_p50_s": median(timings.recorded),
            "decide_p99_s": percentile(timings.recorded, 99),
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
    smallest, largest = min(latencies), max(latencies)
    growth = ratio(percentile(latencies[largest], 99), percentile(latencies[smallest], 99))
    rows.append(
        Row(
            "P2",
            "approve → resume, flat in the pending count",
            f"p99 at {largest:,} pending = {growth:.2f}x p99 at {smallest:,}",
            f"<= {FLAT:.1f}x",
            growth <= FLAT,
            {"smallest": smallest, "largest": largest, "p99_ratio": growth},
        )
    )
    return rows


async def resume_latencies(pending: int, samples: int) -> Timings:
    """The timings of `samples` approvals of one long task's tool calls, in a database holding
    `pending` other proposals."""
    starts = NodeStarts(ROLE)
    token = _handler.set(starts)
    try:
        with tempfile.TemporaryDirectory(prefix="qapten-bench-") as tmp:
            folder = Path(tmp)
            await seed_pending(f"sqlite:///{folder / 'qapten.db'}", pending)
            calls = WARM_UP + samples
            org = solo_chart(calls=calls, action="approve")
            async with qapten_swarm(folder, org=org, scripted=solo_model(calls)) as swarm:
                run = await swarm.start(MISSION)
                timings = Timings()
                for i in range(calls):
                    [proposal] = await swarm.pending(run.id)
                    decided = time.perf_counter()
                    await swarm.decide(proposal.id, "approve", by="bench")
                    recorded = time.perf_counter()
                    # Wait for the step to finish (and the next proposal to be made) before
                    # reading when it started: nothing else runs meanwhile to blur the figure.
                    await swarm.idle(run.id)
                    if i >= WARM_UP:
                        timings.resumed.append(starts.first_after(decided) - decided)
                        timings.recorded.append(recorded - decided)
                done = await swarm.wait(run.id)
                if done.result is None:
                    msg = f"the timed run ended {done.status} without its deliverable"
                    raise RuntimeError(msg)
    finally:
        _handler.reset(token)
    return timings
