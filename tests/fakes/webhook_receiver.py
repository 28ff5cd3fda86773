"""A webhook receiver: records every POST (headers and raw body) and answers with the statuses
it is told to, in order, then 200."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    """When it arrived (time.monotonic)."""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    received: list[Received] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    """Statuses for the next requests, first first; 200 once they are used up."""
    retry_after: str | None = None
    """The Retry-After header of the answers that are not 2xx."""

    def answer_next(self, statuses: Iterable[int]) -> None:
        self.answers.extend(statuses)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    def app(self) -> Starlette:
        async def receive(request: Request) -> Response:
            self.received.append(
                Received(
                    request.url.path, dict(request.headers), await request.body(), time.monotonic()
                )
            )
            status = self.answers.pop(0) if self.answers else 200
            wait = {"Retry-After": self.retry_after} if self.retry_after and status >= 300 else {}
            return Response(status_code=status, headers=wait)

        return Starlette(routes=[Route("/{name}", receive, methods=["POST"])])
