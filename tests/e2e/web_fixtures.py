"""A uvicorn process serving `tests.e2e.web_app`, and the path of Debian's chromium."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .conftest import uvicorn_server

CHROMIUM = Path("/usr/bin/chromium")
# Flags for a root user in a container with no GPU, and no calls home from the browser.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass(frozen=True)
class WebServer:
    url: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@contextmanager
def web_server(folder: Path, token: str) -> Iterator[WebServer]:
    """Serve the web inbox app on a free loopback port until the block ends (even on failure)."""
    env = {"QAPTEN_TEST_DB": f"sqlite:///{folder / 'qapten.db'}", "QAPTEN_ADMIN_TOKEN": token}
    with uvicorn_server("tests.e2e.web_app:make_app", env, log=folder / "server.log") as url:
        yield WebServer(url=url, token=token)
