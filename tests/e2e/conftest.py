"""A real uvicorn process on a free loopback port, started and always stopped by the fixture."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import ROOT

ADMIN_TOKEN = "e2e-admin-token"
HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass(frozen=True)
class Server:
    url: str
    effects: Path

    @property
    def api(self) -> str:
        return f"{self.url}/api/v1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def uvicorn_server(factory: str, env: dict[str, str], *, timeout: float = 30) -> Iterator[str]:
    """Serve `factory` (module:function) with uvicorn; yield its URL once /healthz answers."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            factory,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited: {proc.communicate()[1]}")
            try:
                if httpx.get(f"{url}/api/v1/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not answer within {timeout} s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


ServerFactory = Callable[..., Server]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start the e2e app with a per-role script, optionally on another org chart."""
    with ExitStack() as stack:

        def start(script: dict[str, Any], org: Path | None = None) -> Server:
            script_file = tmp_path / "script.json"
            script_file.write_text(json.dumps(script), encoding="utf-8")
            effects = tmp_path / "effects.txt"
            env = {
                "QAPTEN_TEST_DB": f"sqlite:///{tmp_path / 'qapten.db'}",
                "QAPTEN_TEST_SCRIPT": str(script_file),
                "QAPTEN_TEST_EFFECTS": str(effects),
                "QAPTEN_ADMIN_TOKEN": ADMIN_TOKEN,
                **({"QAPTEN_TEST_ORG": str(org)} if org else {}),
            }
            url = stack.enter_context(uvicorn_server("tests.e2e.server:make_app", env))
            return Server(url=url, effects=effects)

        yield start
