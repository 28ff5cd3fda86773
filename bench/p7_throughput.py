"""P7: steps per second per core with many runs at once in one process, Qapten vs raw LangGraph."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from bench.common import qapten_swarm, ratio, raw_graph
from bench.mission import MODEL_CALLS_PER_MISSION
from bench.raw_graph import run_raw_mission
from bench.report import Row
from bench.sizes import Sizes
from bench.stats import timed

MISSION = "Launch the product in Europe."


async def measure(sizes: Sizes) -> list[Row]:
    """Both sides run `concurrent_runs` missions at once, with no human in the loop (every act
    auto-approved); a step is one model call and what it leads to (8 per mission on both)."""
    runs = sizes.concurrent_runs
    steps = runs * MODEL_CALLS_PER_MISSION
    with tempfile.TemporaryDirectory(prefix="qapten-bench-") as tmp:
        folder = Path(tmp)
        async with qapten_swarm(folder, autonomy="auto") as swarm:
            with timed() as qapten:
                started = [await swarm.start(MISSION) for _ in range(runs)]
                done = await asyncio.gather(*(swarm.wait(run.id) for run in started))
        assert all(run.status == "done" for run in done)
        async with raw_graph(folder, approvals=False) as graph:
            with timed() as raw:
                await asyncio.gather(
                    *(run_raw_mission(graph, f"raw-{i}", MISSION) for i in range(runs))
                )
    q_rate, r_rate = steps / qapten.cpu, steps / raw.cpu
    numbers = {
        "runs": runs,
        "steps": steps,
        "qapten_wall_s": qapten.wall,
        "qapten_cpu_s": qapten.cpu,
        "raw_wall_s": raw.wall,
        "raw_cpu_s": raw.cpu,
        "qapten_steps_per_cpu_s": q_rate,
        "raw_steps_per_cpu_s": r_rate,
    }
    figure = (
        f"Qapten {q_rate:.0f} steps/s per core ({steps / qapten.wall:.0f}/s wall), raw LangGraph "
        f"{r_rate:.0f} ({steps / raw.wall:.0f}/s wall): {ratio(q_rate, r_rate):.2f}x; "
        f"{runs} runs at once"
    )
    return [
        Row(
            "P7",
            f"steps/s per core, {runs} concurrent runs, vs raw LangGraph",
            figure,
            "report; beat raw",
            q_rate >= r_rate,
            numbers,
        )
    ]
