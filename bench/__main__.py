"""``python -m bench``: run the benchmarks, print the table, write docs/benchmarks.md."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
from pathlib import Path

from rich.console import Console

from bench.machine import describe
from bench.report import Row, print_table, write_json, write_markdown
from bench.sizes import FULL, QUICK

BENCHMARKS = {
    "P1": "bench.p1_overhead",
    "P2": "bench.p2_resume",
    "P3": "bench.p3_listing",
    "P4": "bench.p4_decisions",
    "P5": "bench.p5_memory",
    "P6": "bench.p6_checkpoints",
    "P7": "bench.p7_throughput",
    "P8": "bench.p8",
}
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the CI smoke run)")
    parser.add_argument("--only", default="", help="comma-separated ids, e.g. P1,P6")
    parser.add_argument(
        "--out",
        type=Path,
        help=f"Markdown page to update (default: {DEFAULT_OUT.name}; "
        "--quick writes none unless given)",
    )
    parser.add_argument("--json", type=Path, help="also write the rows and raw numbers as JSON")
    args = parser.parse_args(argv)

    wanted = [i.strip().upper() for i in args.only.split(",") if i.strip()] or list(BENCHMARKS)
    unknown = [i for i in wanted if i not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    sizes = QUICK if args.quick else FULL
    console = Console(stderr=True)
    machine = describe()
    console.print(f"[bold]machine:[/] {machine}")
    rows: list[Row] = []
    for bench_id in wanted:
        module = importlib.import_module(BENCHMARKS[bench_id])
        started = time.perf_counter()
        with console.status(f"{bench_id}: {module.__doc__.splitlines()[0]}"):
            measured: list[Row] = asyncio.run(module.measure(sizes))
        console.print(f"{bench_id} measured in {time.perf_counter() - started:.0f} s")
        rows.extend(measured)
    print_table(rows, Console())
    command = "python -m bench" + (" --quick" if args.quick else "")
    if args.only:
        command += f" --only {args.only}"
    out = args.out or (None if args.quick else DEFAULT_OUT)
    if out is not None:
        write_markdown(out, rows, machine, command)
        console.print(f"results written to {out}")
    if args.json is not None:
        write_json(args.json, rows, machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
