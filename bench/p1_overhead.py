"""P1: a 4-role mission in Qapten vs the same graph in raw LangGraph (wall and CPU time)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.common import qapten_swarm, ratio, raw_graph, run_qapten_mission
from bench.raw_graph import run_raw_mission
from bench.report import Row
from bench.sizes import Sizes
from bench.stats import Elapsed, median, ms, timed

TARGET = 1.10
MISSION = "Launch the product in Europe."


async def measure(sizes: Sizes) -> list[Row]:
    qapten: list[Elapsed] = []
    raw: list[Elapsed] = []
    with tempfile.TemporaryDirectory(prefix="qapten-bench-") as tmp:
        folder = Path(tmp)
        async with qapten_swarm(folder) as swarm, raw_graph(folder) as graph:
            # One mission each first, untimed: imports, compilation and caches warm up.
            await run_qapten_mission(swarm, MISSION)
            await run_raw_mission(graph, "warm-up", MISSION)
            # Interleaved, so that a noisy neighbour slows both sides alike.
            for i in range(sizes.missions):
                with timed() as q:
                    await run_qapten_mission(swarm, MISSION)
                with timed() as r:
                    await run_raw_mission(graph, f"raw-{i}", MISSION)
                qapten.append(q)
                raw.append(r)
    wall = ratio(median([e.wall for e in qapten]), median([e.wall for e in raw]))
    cpu = ratio(median([e.cpu for e in qapten]), median([e.cpu for e in raw]))
    numbers = {
        "missions": sizes.missions,
        "qapten_wall_median_s": median([e.wall for e in qapten]),
        "raw_wall_median_s": median([e.wall for e in raw]),
        "qapten_cpu_median_s": median([e.cpu for e in qapten]),
        "raw_cpu_median_s": median([e.cpu for e in raw]),
    }
    figure = (
        f"wall {wall:.2f}x, CPU {cpu:.2f}x (median mission: Qapten "
        f"{ms(numbers['qapten_wall_median_s'])}, raw {ms(numbers['raw_wall_median_s'])}; "
        f"{sizes.missions} missions each)"
    )
    return [
        Row(
            "P1",
            "4-role mission, 8 approvals, vs raw LangGraph",
            figure,
            f"<= {TARGET:.2f}x",
            wall <= TARGET and cpu <= TARGET,
            numbers,
        )
    ]
