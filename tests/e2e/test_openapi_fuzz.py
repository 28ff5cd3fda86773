"""schemathesis against a real server's OpenAPI, with a valid admin token: never a 5xx.

Its phases: the coverage phase (every boundary the schema states), fuzzing, and stateful
sequences that follow links schemathesis infers between operations (a run's `id` from
``POST /runs`` into ``GET /runs/{run_id}``, a proposal's into its decision, ...), so that real
runs and proposals are read, decided and cancelled, not only 404s.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from qapten.testing import delegate, deliver

from .conftest import ADMIN_TOKEN, ServerFactory


def status_classes(ndjson: Path) -> Counter[tuple[str, int]]:
    """Responses by (phase, status // 100), from schemathesis's NDJSON event report."""
    counts: Counter[tuple[str, int]] = Counter()
    for line in ndjson.read_text(encoding="utf-8").splitlines():
        event = json.loads(line).get("ScenarioFinished")
        if event is None:
            continue
        for interaction in (event["recorder"].get("interactions") or {}).values():
            if interaction.get("response"):
                counts[event["phase"], interaction["response"]["status_code"] // 100] += 1
    return counts


@pytest.mark.slow
def test_no_server_errors_under_schemathesis(serve: ServerFactory, tmp_path: Path) -> None:
    # Enough script for a few runs to plan and deliver; runs started beyond it fail cleanly.
    script = {"ceo": [delegate(cto="x"), deliver("y")] * 20, "cto": [deliver("z")] * 20}
    # Without a rate limit: past it every request would be a 429, and the routes go untested
    # (tests/e2e/test_http_abuse.py tests the limit).
    server = serve(script, env={"QAPTEN_RATE_LIMIT": "off"})
    reports = tmp_path / "reports"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--header",
            f"Authorization: Bearer {ADMIN_TOKEN}",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--request-timeout",
            "10",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--report",
            "json,ndjson",
            "--report-dir",
            str(reports),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    [report_file] = reports.glob("*.json")
    report = json.loads(report_file.read_text(encoding="utf-8"))
    assert report["operations"]["tested"] == report["operations"]["total"] >= 13
    assert report["phases"]["stateful"]["status"] == "success", report["phases"]
    cases = report["test_cases"]
    assert cases["with_failures"] == cases["errored"] == 0
    assert cases["generated"] >= 500

    [events] = reports.glob("*.ndjson")
    counts = status_classes(events)
    assert sum(n for (_, klass), n in counts.items() if klass == 5) == 0
    # Not only refusals: every phase got answers that did something, stateful ones included.
    for phase in ("coverage", "fuzzing", "stateful"):
        assert counts[phase, 2] >= 20, counts
    print(f"schemathesis: {cases['generated']} cases; responses by phase and class: {counts}")
