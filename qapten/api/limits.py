"""Limits against abuse of the HTTP server: body size (413), request rate (429), CORS.

They are ASGI middlewares, so they guard a whole app: `create_app` installs them with
`add_limits`; a host app that mounts `qapten.api.router` decides for itself, and may call
``add_limits(app, settings, api_prefix=...)`` to get the same. Refusals answer in the API's JSON
error shape and are counted, not recorded as events: writing an event per refused request would
hand a flood the very work it is refused to spare. The counts are appended to ``/metrics``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qapten.api.auth import TokenBook
from qapten.api.errors import ApiError, error_response
from qapten.api.rates import Rate, RateLimiter
from qapten.api.settings import ApiSettings

__all__ = ["BodySizeLimit", "MetricsAppendix", "Refusals", "RequestRateLimit", "add_limits"]


class Refusals:
    """Requests refused by the limits of this process, for ``/metrics``."""

    def __init__(self) -> None:
        self.rate_limited: Counter[str] = Counter()
        """By token name ("" for requests without a known token)."""
        self.body_too_large = 0

    def exposition(self) -> bytes:
        """The counts in Prometheus text format."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_RefusalCollector(self))
        return generate_latest(registry)


class _RefusalCollector(Collector):
    def __init__(self, refusals: Refusals) -> None:
        self.refusals = refusals

    def collect(self) -> list[Metric]:
        limited = CounterMetricFamily(
            "qapten_http_rate_limited",
            "Requests refused with 429 by this process, by token name (empty: no known token).",
            labels=["token"],
        )
        for name, count in sorted(self.refusals.rate_limited.items()):
            limited.add_metric([name], count)
        too_large = CounterMetricFamily(
            "qapten_http_body_too_large",
            "Requests refused with 413 by this process.",
            value=self.refusals.body_too_large,
        )
        return [limited, too_large]


def _path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class BodySizeLimit:
    """Refuse request bodies over `max_bytes` with 413, whether announced or streamed.

    An announced ``Content-Length`` over the limit is refused without reading a byte. Otherwise
    the body is read here, up to the limit, and handed on whole: a chunked upload is cut off as
    soon as it passes the limit, and the app never sees a body it would refuse.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, refusals: Refusals | None = None) -> None:
        self.app, self.max_bytes = app, max_bytes
        self.refusals = refusals or Refusals()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nobody to answer
                return
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:  # later calls wait for the disconnect, as streaming responses do
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.refusals.body_too_large += 1
        message = f"request body over {self.max_bytes} bytes"
        error = ApiError(
            413,
            "body_too_large",
            message,
            details={"max_bytes": self.max_bytes},
            # Whatever the client still sends is not read: close rather than drain it.
            headers={"Connection": "close"},
        )
        await error_response(error)(scope, receive, send)


class RequestRateLimit:
    """Refuse a caller's requests over `limiter`'s rate with 429 and ``Retry-After``.

    The caller is the name of the bearer token, or the client address when the request has no
    known token (so that a flood of bad tokens, each a 401 and an event, is bounded too). Paths in
    `exempt` are never counted.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: RateLimiter,
        identify: Callable[[str], str | None],
        exempt: frozenset[str] = frozenset(),
        refusals: Refusals | None = None,
    ) -> None:
        self.app, self.limiter, self.identify, self.exempt = app, limiter, identify, exempt
        self.refusals = refusals or Refusals()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _path(scope) in self.exempt:
            await self.app(scope, receive, send)
            return
        name = self._token_name(scope)
        if name is not None:
            key = f"token:{name}"
        else:
            client = scope.get("client")
            key = f"address:{client[0] if client else '?'}"
        wait = self.limiter.acquire(key)
        if not wait:
            await self.app(scope, receive, send)
            return
        self.refusals.rate_limited[name or ""] += 1
        rate = self.limiter.rate
        error = ApiError(
            429,
            "rate_limited",
            f"more than {rate} requests: retry in {wait} s",
            details={"limit": str(rate), "retry_after": wait},
            headers={"Retry-After": str(wait)},
        )
        await error_response(error)(scope, receive, send)

    def _token_name(self, scope: Scope) -> str | None:
        scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.identify(token.strip())


class MetricsAppendix:
    """Append `extra()` to the Prometheus text of a GET on `path`.

    ``/metrics`` is computed from the database; these counts live in the process, so they are
    added to its answer on the way out rather than queried.
    """

    def __init__(self, app: ASGIApp, *, path: str, extra: Callable[[], bytes]) -> None:
        self.app, self.path, self.extra = app, path, extra

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or _path(scope) != self.path:
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def send_with_extra(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            headers = MutableHeaders(raw=list(start.get("headers", [])))
            if start.get("status") == 200 and headers.get("content-type", "").startswith(
                "text/plain"
            ):
                body += self.extra()
                headers["content-length"] = str(len(body))
            await send({**start, "headers": headers.raw})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, send_with_extra)


def add_limits(
    app: Starlette,
    settings: ApiSettings,
    *,
    api_prefix: str = "/api/v1",
    clock: Callable[[], float] = time.monotonic,
) -> Refusals:
    """Install body size, rate and CORS limits from `settings` on `app` (a Starlette app).

    ``{api_prefix}/healthz`` and ``{api_prefix}/metrics`` are not rate limited: a load balancer's
    health checks and Prometheus's scrapes come without a token, often from one shared address,
    and refusing them would make a busy server look dead (and get it restarted). Returns the
    counts of refused requests, which ``{api_prefix}/metrics`` also shows.
    """
    refusals = Refusals()
    api_prefix = api_prefix.rstrip("/")
    # add_middleware wraps what is there: the last added is the outermost.
    app.add_middleware(MetricsAppendix, path=f"{api_prefix}/metrics", extra=refusals.exposition)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, refusals=refusals)
    rate: Rate | None = settings.rate()
    if rate is not None:
        tokens = TokenBook(settings.all_tokens())

        def identify(token: str) -> str | None:
            principal = tokens.principal(token)
            return None if principal is None else principal.name

        app.add_middleware(
            RequestRateLimit,
            limiter=RateLimiter(rate, clock=clock),
            identify=identify,
            exempt=frozenset({f"{api_prefix}/healthz", f"{api_prefix}/metrics"}),
            refusals=refusals,
        )
    if settings.cors_origins:
        # Outermost, so that 413 and 429 carry the CORS headers too and a page can read them.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=("GET", "POST"),
            allow_headers=("Authorization", "Content-Type", "Last-Event-ID"),
            expose_headers=("Retry-After",),
            allow_credentials=False,  # bearer tokens, never cookies
        )
    return refusals
