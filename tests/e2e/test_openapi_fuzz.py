"""schemathesis against a real server's OpenAPI, with a valid admin token: never a 5xx."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from qapten.testing import delegate, deliver

from .conftest import ADMIN_TOKEN, ServerFactory


@pytest.mark.slow
def test_no_server_errors_under_schemathesis(serve: ServerFactory, tmp_path: Path) -> None:
    # Enough script for a few runs to plan and deliver; runs started beyond it fail cleanly.
    script = {"ceo": [delegate(cto="x"), deliver("y")] * 20, "cto": [deliver("z")] * 20}
    server = serve(script)
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
            "examples,coverage,fuzzing",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", out.stdout)
    assert counts is not None, out.stdout[-2000:]
    generated, passed = map(int, counts.groups())
    assert generated == passed >= 100  # every operation was exercised, none answered 5xx
