"""A real uvicorn process on a free loopback port, started and always stopped by the fixture."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ..servers import running_server

ADMIN_TOKEN = "e2e-admin-token"
HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass(frozen=True)
class Server:
    url: str
    effects: Path

    @property
    def api(self) -> str:
        return f"{self.url}/api/v1"


@contextmanager
def uvicorn_server(factory: str, env: dict[str, str], *, log: Path) -> Iterator[str]:
    """Serve `factory` (module:function) with uvicorn on a free loopback port."""

    def command(port: int) -> list[str]:
        return [
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
        ]

    with running_server(command, log=log, env={**os.environ, **env}) as url:
        yield url


ServerFactory = Callable[..., Server]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start the e2e app with a per-role script, optionally on another org chart."""
    with ExitStack() as stack:

        def start(
            script: dict[str, Any], org: Path | None = None, env: dict[str, str] | None = None
        ) -> Server:
            script_file = tmp_path / "script.json"
            script_file.write_text(json.dumps(script), encoding="utf-8")
            effects = tmp_path / "effects.txt"
            env = {
                "QAPTEN_TEST_DB": f"sqlite:///{tmp_path / 'qapten.db'}",
                "QAPTEN_TEST_SCRIPT": str(script_file),
                "QAPTEN_TEST_EFFECTS": str(effects),
                "QAPTEN_ADMIN_TOKEN": ADMIN_TOKEN,
                **({"QAPTEN_TEST_ORG": str(org)} if org else {}),
                **(env or {}),
            }
            log = tmp_path / "server.log"
            url = stack.enter_context(uvicorn_server("tests.e2e.server:make_app", env, log=log))
            return Server(url=url, effects=effects)

        yield start
