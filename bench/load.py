"""A bounded load of decisions over HTTP: ``python -m bench.load API_URL IDS_FILE [options]``.

Approves each proposal id of IDS_FILE (one a line) with ``POST /proposals/{id}/decision`` over
`--connections` keep-alive connections, each sending its next request as soon as the last one
answered. It stops by itself when every id was sent or `--max-seconds` passed, whichever comes
first, and prints its results as one JSON object. The token comes from the environment
(``QAPTEN_BENCH_TOKEN``), never from the command line. Run in its own process, so that the
client's work does not share the server's event loop (P4).

The client is a few lines of HTTP/1.1 on asyncio streams rather than httpx: httpx spends about
1.8 ms of CPU a request, so on one core it could not send much more than 500 a second, and the
benchmark would measure the client. Only what uvicorn answers is parsed: a status line, headers
and a Content-Length body.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.stats import percentile

TOKEN_ENV = "QAPTEN_BENCH_TOKEN"
BODY = b'{"decision": "approve"}'
TIMEOUT = 60.0
"""Seconds a request may take before it counts as an error (and its connection is dropped)."""


class BadResponse(Exception):
    """An answer this client does not read (no Content-Length): counted as an error."""


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    prefix: str
    token: str

    @classmethod
    def parse(cls, api: str, token: str) -> Target:
        parts = urlsplit(api)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{api!r}: give the API's http:// URL")
        return cls(parts.hostname, parts.port or 80, parts.path.rstrip("/"), token)

    def request(self, method: str, path: str, body: bytes = b"") -> bytes:
        head = [
            f"{method} {self.prefix}{path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            f"Authorization: Bearer {self.token}",
        ]
        if body:
            head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Connection:
    """One keep-alive connection, one request at a time."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def send(self, request: bytes) -> int:
        """Send `request`, read the whole answer; returns its status code."""
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.target.host, self.target.port)
        reader, writer = self._streams
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = None
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length is None:
                raise BadResponse("an answer without Content-Length")
            await reader.readexactly(length)
            return int(head.split(b" ", 2)[1])
        except BaseException:
            self.close()  # its state is unknown: the next request opens a new one
            raise

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


async def decide_all(
    target: Target, ids: list[str], *, connections: int, max_seconds: float
) -> dict[str, Any]:
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    todo: Iterator[str] = iter(ids)
    pool = [Connection(target) for _ in range(connections)]
    try:
        # Every connection is opened before the clock starts: the figure is decisions, not
        # TCP handshakes.
        health = target.request("GET", "/healthz")
        await asyncio.gather(*(connection.send(health) for connection in pool))
        started_wall, started = time.time(), time.perf_counter()
        deadline = started + max_seconds

        async def worker(connection: Connection) -> None:
            for proposal_id in todo:  # shared: each id is taken by one worker
                request = target.request("POST", f"/proposals/{proposal_id}/decision", BODY)
                sent = time.perf_counter()
                try:
                    status = await asyncio.wait_for(connection.send(request), TIMEOUT)
                    statuses[str(status)] += 1
                except (OSError, EOFError, TimeoutError, ValueError, BadResponse) as exc:
                    statuses[type(exc).__name__] += 1
                done = time.perf_counter()
                latencies.append(done - sent)
                if done > deadline:
                    return

        cpu = time.process_time()
        await asyncio.gather(*(worker(connection) for connection in pool))
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
    finally:
        for connection in pool:
            connection.close()
    sent = sum(statuses.values())
    return {
        "sent": sent,
        "ok": statuses["200"],
        "errors": {status: n for status, n in statuses.items() if status != "200"},
        "stopped_by": "count" if sent == len(ids) else "time",
        "connections": connections,
        "started_at": started_wall,
        "elapsed_s": elapsed,
        "rate_per_s": statuses["200"] / elapsed if elapsed else 0.0,
        "latency_p50_s": percentile(latencies, 50),
        "latency_p99_s": percentile(latencies, 99),
        "latency_max_s": max(latencies, default=float("nan")),
        "client_cpu_s": cpu,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    parser.add_argument("url", help="the API's base URL, e.g. http://127.0.0.1:8000/api/v1")
    parser.add_argument("ids", type=Path, help="a file of proposal ids, one a line")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args(argv)
    token = os.environ.get(TOKEN_ENV)
    if not token:
        parser.error(f"set {TOKEN_ENV} to the server's token")
    target = Target.parse(args.url, token)
    ids = args.ids.read_text(encoding="utf-8").split()
    results = asyncio.run(
        decide_all(target, ids, connections=args.connections, max_seconds=args.max_seconds)
    )
    json.dump(results, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
