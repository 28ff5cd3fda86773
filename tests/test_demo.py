"""`qapten demo` without --auto: it serves the inbox on 127.0.0.1 and the run is decided over HTTP.

The embedded model's own demo (`--auto`) is in test_local_model.py; here the scripted model
stands in so that the served half is tested quickly and exactly.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from qapten.testing import delegate, deliver

from .conftest import ROOT
from .servers import free_port

QAPTEN = str(Path(sys.executable).with_name("qapten"))


def _script(tmp_path: Path) -> Path:
    script = {
        "ceo": [delegate(support="Write the FAQ"), deliver("Launch plan with FAQ")],
        "support": [deliver("FAQ: three questions")],
    }
    path = tmp_path / "script.json"
    path.write_text(json.dumps(script), encoding="utf-8")
    return path


def _read_until(proc: subprocess.Popen[str], pattern: str, timeout: float = 30) -> re.Match[str]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if found := re.search(pattern, line):
            return found
    raise AssertionError(f"no line matched {pattern!r}; output:\n{''.join(seen)}")


@pytest.mark.slow
def test_demo_serves_the_inbox_and_ends_when_the_run_is_decided(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            QAPTEN,
            "demo",
            "--model",
            f"scripted:{_script(tmp_path)}",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "demo"),
            "--mission",
            "Launch the app",
        ],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,  # not a terminal: decisions come from the inbox only
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "100"},
    )
    try:
        url = _read_until(proc, r"web inbox: (http://127\.0\.0\.1:\d+/)#token=(\S+)")
        token = url.group(2)
        api = f"{url.group(1)}api/v1"
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{api}/proposals", timeout=5).status_code == 401  # the token matters
        approved = []
        deadline = time.monotonic() + 30
        with httpx.Client(headers=headers, timeout=5) as client:
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    page = client.get(f"{api}/proposals", params={"status": "pending"}).json()
                except httpx.TransportError:
                    break  # the demo stopped serving: the run is over
                for proposal in page["items"]:
                    decided = client.post(
                        f"{api}/proposals/{proposal['id']}/decision", json={"decision": "approve"}
                    )
                    assert decided.status_code == 200, decided.text
                    approved.append((proposal["role"], proposal["kind"]))
                time.sleep(0.1)
        assert proc.wait(timeout=30) == 0
        assert approved == [("ceo", "plan"), ("ceo", "deliverable")]  # support's is auto
        assert proc.stdout is not None
        rest = proc.stdout.read()
        assert "Launch plan with FAQ" in rest
        assert "run r_" in rest and ": done" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize("command", ["demo", "serve"])
def test_a_port_in_use_is_one_line_and_nothing_is_written(tmp_path: Path, command: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        org = [] if command == "demo" else ["agents/org.yaml"]
        options = ["--model", f"scripted:{_script(tmp_path)}", "--port", str(port)]
        out = subprocess.run(
            [QAPTEN, command, *org, *options, "--data-dir", str(tmp_path / "data")],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.strip() == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use (choose another --port)"
    )
    assert "Traceback" not in out.stdout
    assert not (tmp_path / "data").exists()
