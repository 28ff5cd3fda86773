"""Limits against abuse, in-process: 413 for large bodies (announced or streamed), 429 per
token with Retry-After, CORS off unless configured, and the refusals counted in /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from qapten import Swarm
from qapten.api import API_PREFIX, ApiSettings, add_limits, create_app, router
from qapten.api.limits import BodySizeLimit
from qapten.api.rates import Rate, RateLimiter

from .conftest import TOKENS, auth

ADMIN, VIEWER = auth("admin-token"), auth("viewer-token")
ORIGIN = "https://ops.example.com"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def settings(**options: Any) -> ApiSettings:
    return ApiSettings(tokens=tuple(TOKENS.values()), **options)


def client_of(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://qapten")


# -- settings and the token bucket ---------------------------------------------------------------


def test_rate_format_and_settings_validation(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert Rate.parse("120/minute") == Rate(120, 60.0)
    assert Rate.parse(" 5 / Seconds ") == Rate(5, 1.0)
    assert str(Rate.parse("3/hours")) == "3/hour"
    for bad in ("120", "0/minute", "10/fortnight", "ten/second", "-1/second", "5/s"):
        with pytest.raises(ValueError, match="N/unit"):
            Rate.parse(bad)

    for name in ("QAPTEN_CORS_ORIGINS", "QAPTEN_RATE_LIMIT", "QAPTEN_MAX_BODY_BYTES"):
        monkeypatch.delenv(name, raising=False)
    defaults = ApiSettings()
    assert defaults.max_body_bytes == 1024 * 1024
    assert defaults.rate() == Rate(600, 60.0)
    assert defaults.cors_origins == ()
    assert ApiSettings(rate_limit="off").rate() is None
    assert ApiSettings(rate_limit=False).rate() is None  # type: ignore[arg-type]  # YAML `off`
    with pytest.raises(ValidationError, match="second, minute, hour"):
        ApiSettings(rate_limit="10/fortnight")
    with pytest.raises(ValidationError, match="no path"):
        ApiSettings(cors_origins=("https://ops.example.com/inbox",))
    with pytest.raises(ValidationError, match="list each origin"):
        ApiSettings(cors_origins=("*",))
    with pytest.raises(ValidationError, match="max_body_bytes"):
        ApiSettings(max_body_bytes=0)

    settings_file = tmp_path / "settings.yaml"
    settings_file.write_text(
        "rate_limit: off\nmax_body_bytes: 4096\ncors_origins: [https://ops.example.com]\n",
        encoding="utf-8",
    )
    from_file = ApiSettings.load(settings_file)  # YAML reads `off` as false
    assert from_file.rate() is None and from_file.max_body_bytes == 4096
    assert from_file.cors_origins == (ORIGIN,)

    monkeypatch.setenv("QAPTEN_CORS_ORIGINS", "https://A.example.com/, http://localhost:5173")
    monkeypatch.setenv("QAPTEN_RATE_LIMIT", "30/second")
    monkeypatch.setenv("QAPTEN_MAX_BODY_BYTES", "2048")
    loaded = ApiSettings.load()
    assert loaded.cors_origins == ("https://a.example.com", "http://localhost:5173")
    assert loaded.rate() == Rate(30, 1.0)
    assert loaded.max_body_bytes == 2048
    monkeypatch.setenv("QAPTEN_RATE_LIMIT", "off")
    assert ApiSettings.load().rate() is None


def test_token_bucket_bursts_refills_and_forgets_idle_callers() -> None:
    clock = FakeClock()
    limiter = RateLimiter(Rate(3, 60.0), clock=clock, max_keys=4)
    assert [limiter.acquire("a") for _ in range(4)] == [0, 0, 0, 20]  # one every 20 s
    assert limiter.acquire("b") == 0  # another caller has its own bucket
    clock.now += 19.5
    assert limiter.acquire("a") == 1  # not quite there: whole seconds, rounded up
    clock.now += 0.5
    assert limiter.acquire("a") == 0
    assert limiter.acquire("a") == 20

    # Memory stays bounded: idle (full) buckets go first, then the least recently used.
    clock.now += 3600
    for key in ("c", "d", "e", "f", "g"):
        limiter.acquire(key)
    assert len(limiter) == 4


# -- 413 ---------------------------------------------------------------------------------------


@pytest.fixture
async def small_body_client(swarm: Swarm) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(create_app(swarm, settings(max_body_bytes=1000))) as client:
        yield client


async def chunks(*parts: bytes, sent: list[int] | None = None) -> AsyncIterator[bytes]:
    for part in parts:  # sent as a chunked body: no Content-Length
        if sent is not None:
            sent.append(len(part))
        yield part


async def test_an_announced_body_over_the_limit_gets_413(
    small_body_client: httpx.AsyncClient,
) -> None:
    response = await small_body_client.post(
        "/api/v1/runs", json={"mission": "m" * 2000}, headers=ADMIN
    )
    assert response.status_code == 413
    assert response.json() == {
        "code": "body_too_large",
        "message": "request body over 1000 bytes",
        "details": {"max_bytes": 1000},
    }
    assert response.headers["connection"] == "close"
    # Under the limit the same route works.
    ok = await small_body_client.post("/api/v1/runs", json={"mission": "m" * 900}, headers=ADMIN)
    assert ok.status_code == 201


async def test_a_streamed_body_without_length_is_cut_off(
    small_body_client: httpx.AsyncClient,
) -> None:
    url = "/api/v1/proposals/p_unknown/decision"
    headers = {**ADMIN, "Content-Type": "application/json"}
    sent: list[int] = []
    streamed = await small_body_client.post(
        url, content=chunks(*[b"x" * 256] * 20, sent=sent), headers=headers
    )
    assert streamed.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in streamed.request.headers
    assert len(sent) == 4  # cut off at the chunk that passed 1000 bytes, not read to the end
    assert streamed.status_code == 413
    assert streamed.json()["code"] == "body_too_large"
    # A streamed body under the limit reaches the route whole (here: 404, not 413).
    body = b'{"decision": "approve"}'
    small = await small_body_client.post(url, content=chunks(body[:10], body[10:]), headers=headers)
    assert small.status_code == 404


async def test_an_announced_body_over_the_limit_is_not_read() -> None:
    called = False

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal called
        called = True

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body was read")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    guard = BodySizeLimit(app, max_bytes=10)
    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-length", b"11")]}
    await guard(scope, receive, send)
    assert not called
    assert sent[0]["status"] == 413
    assert guard.refusals.body_too_large == 1


# -- 429 ---------------------------------------------------------------------------------------


async def test_a_burst_over_the_rate_gets_429_then_passes_after_waiting(swarm: Swarm) -> None:
    # As a host app would mount it: the router plus add_limits, here on a fake clock.
    clock = FakeClock()
    config = settings(rate_limit="3/minute")
    app = FastAPI()
    app.include_router(router(swarm, config), prefix=API_PREFIX)
    add_limits(app, config, api_prefix=API_PREFIX, clock=clock)
    async with client_of(app) as client:
        statuses = [(await client.get("/api/v1/org", headers=ADMIN)).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        refused = await client.get("/api/v1/org", headers=ADMIN)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "20"
        assert refused.json() == {
            "code": "rate_limited",
            "message": "more than 3/minute requests: retry in 20 s",
            "details": {"limit": "3/minute", "retry_after": 20},
        }

        # Another token is unaffected; health checks and scrapes are never counted.
        assert (await client.get("/api/v1/org", headers=VIEWER)).status_code == 200
        for _ in range(10):
            assert (await client.get("/api/v1/healthz")).status_code == 200

        clock.now += 20
        assert (await client.get("/api/v1/org", headers=ADMIN)).status_code == 200
        assert (await client.get("/api/v1/org", headers=ADMIN)).status_code == 429

        # Without a known token the caller is its address: a flood of bad tokens is bounded too.
        unknown = [
            (await client.get("/api/v1/runs", headers=auth(f"guess-{n}"))).status_code
            for n in range(4)
        ]
        assert unknown == [401, 401, 401, 429]

        metrics = await client.get("/api/v1/metrics")
        assert metrics.status_code == 200
        assert int(metrics.headers["content-length"]) == len(metrics.content)
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    limited = {
        s.labels["token"]: s.value
        for s in families["qapten_http_rate_limited"].samples
        if s.name.endswith("_total")
    }
    assert limited == {"alice": 3.0, "": 1.0}  # by token name; "" without a known token
    assert "qapten_runs" in families  # the database's metrics are still there
    # Refused for rate, not recorded as events: only the three 401s are.
    refused_events = [e for e in await swarm.events() if e.type == "access.refused"]
    assert len(refused_events) == 3


async def test_create_app_limits_the_rate_by_default(swarm: Swarm) -> None:
    async with client_of(create_app(swarm, settings(rate_limit="2/hour"))) as client:
        statuses = [(await client.get("/api/v1/org", headers=ADMIN)).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        assert int((await client.get("/api/v1/org", headers=ADMIN)).headers["retry-after"]) > 1000
    async with client_of(create_app(swarm, settings(rate_limit=None))) as client:
        for _ in range(20):
            assert (await client.get("/api/v1/org", headers=ADMIN)).status_code == 200


# -- CORS --------------------------------------------------------------------------------------


PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


async def test_cors_is_off_by_default(client: httpx.AsyncClient) -> None:
    preflight = await client.options("/api/v1/runs", headers=PREFLIGHT)
    simple = await client.get("/api/v1/org", headers={**ADMIN, "Origin": ORIGIN})
    assert simple.status_code == 200
    for response in (preflight, simple):
        assert not any(h.startswith("access-control-") for h in response.headers), response.headers


async def test_cors_allows_only_the_configured_origins(swarm: Swarm) -> None:
    app = create_app(swarm, settings(cors_origins=(ORIGIN,), rate_limit="1/hour"))
    async with client_of(app) as client:
        preflight = await client.options("/api/v1/runs", headers=PREFLIGHT)
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in preflight.headers

        simple = await client.get("/api/v1/org", headers={**ADMIN, "Origin": ORIGIN})
        assert simple.status_code == 200
        assert simple.headers["access-control-allow-origin"] == ORIGIN
        # A page of that origin can read a 429 and its Retry-After.
        limited = await client.get("/api/v1/org", headers={**ADMIN, "Origin": ORIGIN})
        assert limited.status_code == 429
        assert limited.headers["access-control-allow-origin"] == ORIGIN
        assert limited.headers["access-control-expose-headers"] == "Retry-After"

        other = {"Origin": "https://evil.example.com"}
        refused = await client.options("/api/v1/runs", headers={**PREFLIGHT, **other})
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        plain = await client.get("/api/v1/healthz", headers=other)
        assert plain.status_code == 200
        assert "access-control-allow-origin" not in plain.headers
