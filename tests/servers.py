"""Server processes for tests: started on a free loopback port, always stopped."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(
    command: Callable[[int], list[str]],
    *,
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    timeout: float = 30,
    started: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> Iterator[str]:
    """Run `command(port)`; yield the server's URL once /api/v1/healthz answers (`started`, if
    given, is told of the process first: the benchmarks read its memory).

    The process is stopped when the block ends, whatever happens. Its output goes to `log`: a
    pipe that nobody reads could fill up and stall the server.
    """
    port = free_port()
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            command(port),
            cwd=cwd,
            env=env or dict(os.environ),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    if started is not None:
        started(proc)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                text = log.read_text(encoding="utf-8")
                raise RuntimeError(f"the server exited with {proc.returncode}:\n{text}")
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
        stop(proc)


@contextmanager
def running_process(
    command: list[str], *, log: Path, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `command` (a process that serves no HTTP, like a worker) until the block ends; its
    output goes to `log`. It is stopped (SIGTERM, then SIGKILL) unless it has exited already."""
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            command, cwd=cwd, env=env or dict(os.environ), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], *, grace: float = 10) -> None:
    """SIGTERM `proc` (unless it has exited), then SIGKILL it if it is still there after `grace`
    seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
