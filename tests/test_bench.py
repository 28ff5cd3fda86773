"""The benchmarks keep working: a smoke run of ``python -m bench --quick`` measures every row.

Benchmarks are not tests (their figures depend on the machine); this only checks that each one
runs end to end at tiny sizes and reports real numbers in the table and the JSON.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IDS = ["P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_benchmark_runs_at_tiny_sizes(tmp_path: Path) -> None:
    page, data = tmp_path / "benchmarks.md", tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(page), "--json", str(data)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=580,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(data.read_text(encoding="utf-8"))["rows"]
    assert sorted({row["id"] for row in rows}) == IDS
    for row in rows:
        numbers = [v for v in row["numbers"].values() if isinstance(v, int | float)]
        assert numbers, f"{row['id']} reported no numbers"
        assert all(math.isfinite(v) for v in numbers), row
    text = page.read_text(encoding="utf-8")
    assert "python -m bench --quick" in text
    assert all(f"| {bench_id} |" in text for bench_id in IDS)
