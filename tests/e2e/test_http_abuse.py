"""Abuse of a real server on 127.0.0.1, bounded in count: bodies too large (announced, or streamed
without a length), a burst over the rate of one token, and CORS only for the configured origin."""

from __future__ import annotations

import http.client
import json
import socket
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from qapten.api.settings import token_digest

from .conftest import ADMIN_TOKEN, HEADERS, ServerFactory

LIMIT = 64 * 1024
SCRIPT = {"ceo": [], "cto": []}
VIEWER = {"Authorization": "Bearer viewer-token"}
ORIGIN = "https://ops.example.com"


def raw_post(
    url: str, path: str, headers: dict[str, str], chunks: list[bytes]
) -> tuple[int, dict[str, object], bool]:
    """POST by hand: `headers` as given, then `chunks` as they are; the answer, and whether the
    server closed the connection after it."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        head = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        for chunk in chunks:
            sock.sendall(chunk)
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = json.loads(response.read())
        closed = sock.recv(1) == b""
        return response.status, body, closed


def chunked(data: bytes, size: int) -> list[bytes]:
    """`data` in chunked transfer encoding, without the final empty chunk: the body never ends."""
    return [
        f"{len(data[i : i + size]):x}\r\n".encode() + data[i : i + size] + b"\r\n"
        for i in range(0, len(data), size)
    ]


def test_bodies_over_the_limit_get_413(serve: ServerFactory) -> None:
    server = serve(SCRIPT, env={"QAPTEN_MAX_BODY_BYTES": str(LIMIT)})
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    too_large = {
        "code": "body_too_large",
        "message": f"request body over {LIMIT} bytes",
        "details": {"max_bytes": LIMIT},
    }

    # Announced: 10 GB are refused at once, without waiting for a byte of them.
    status, body, closed = raw_post(
        server.url, "/api/v1/runs", {**auth, "Content-Length": str(10**10)}, []
    )
    assert (status, body, closed) == (413, too_large, True)

    # Streamed without a length: refused as soon as it passes the limit, before it even ends.
    status, body, closed = raw_post(
        server.url,
        "/api/v1/runs",
        {**auth, "Transfer-Encoding": "chunked"},
        chunked(b"x" * (LIMIT + 8192), 8192),
    )
    assert (status, body, closed) == (413, too_large, True)

    # The same through a client library, and the server is none the worse for it.
    with httpx.Client(headers=HEADERS, timeout=10) as client:
        large = client.post(f"{server.api}/runs", json={"mission": "m" * LIMIT})
        assert large.status_code == 413 and large.json() == too_large
        ok = client.post(f"{server.api}/runs", json={"mission": "m" * 1000})
        assert ok.status_code == 201
        assert client.get(f"{server.api}/healthz").status_code == 200


def test_a_burst_over_one_tokens_rate_gets_429_and_cors_is_off(serve: ServerFactory) -> None:
    tokens = [{"name": "bob", "sha256": token_digest("viewer-token"), "scope": "viewer"}]
    env = {"QAPTEN_RATE_LIMIT": "10/minute", "QAPTEN_TOKENS": json.dumps(tokens)}
    server = serve(SCRIPT, env=env)
    with httpx.Client(timeout=10) as client:
        org = f"{server.api}/org"
        burst = [client.get(org, headers={**HEADERS, "Origin": ORIGIN}) for _ in range(12)]
        assert [r.status_code for r in burst] == [200] * 10 + [429] * 2
        refused = burst[-1]
        assert refused.headers["retry-after"] == "6"  # one request back every 6 s
        assert refused.json()["code"] == "rate_limited"
        assert refused.json()["details"] == {"limit": "10/minute", "retry_after": 6}

        assert client.get(org, headers=VIEWER).status_code == 200  # bob has his own
        health = [client.get(f"{server.api}/healthz").status_code for _ in range(20)]
        assert health == [200] * 20  # never counted

        # CORS is off by default: no response says which origins may read it.
        preflight = client.options(
            f"{server.api}/runs",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
        )
        for response in (*burst, preflight):
            assert "access-control-allow-origin" not in response.headers

        metrics = client.get(f"{server.api}/metrics")
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    limited = {
        s.labels["token"]: s.value
        for s in families["qapten_http_rate_limited"].samples
        if s.name.endswith("_total")
    }
    assert limited == {"admin": 2.0}


def test_cors_only_for_the_configured_origin(serve: ServerFactory) -> None:
    server = serve(SCRIPT, env={"QAPTEN_CORS_ORIGINS": ORIGIN})
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    with httpx.Client(timeout=10) as client:
        allowed = client.options(f"{server.api}/runs", headers={**preflight, "Origin": ORIGIN})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == ORIGIN
        read = client.get(f"{server.api}/org", headers={**HEADERS, "Origin": ORIGIN})
        assert read.headers["access-control-allow-origin"] == ORIGIN

        other = "https://evil.example.com"
        refused = client.options(f"{server.api}/runs", headers={**preflight, "Origin": other})
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        read = client.get(f"{server.api}/org", headers={**HEADERS, "Origin": other})
        assert read.status_code == 200  # CORS guards browsers' reading, not the server
        assert "access-control-allow-origin" not in read.headers
