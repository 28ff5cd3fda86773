"""Every example runs, offline, and shows what it promises."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import ROOT


@pytest.mark.slow
def test_quickstart_runs_a_full_mission() -> None:
    out = subprocess.run(
        [sys.executable, "examples/quickstart.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"COLUMNS": "200", "PATH": ""},
    )
    assert out.returncode == 0, out.stderr
    for expected in (
        "ceo        plan",
        "cto        action",
        "support    question",
        "Final deliverable: Launch plan",
        "- Budget: 300 EUR/month",
    ):
        assert expected in out.stdout
    assert out.stdout.count(" done ") == 4  # the whole task tree finished
