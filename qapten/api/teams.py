"""Routing each request of a deployment of several teams to its team's app: by bearer token,
and a decision link's page (which a click reaches without one) by the team its query names."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from qapten.api.links import LINKS_PATH, TEAM_HINT
from qapten.api.settings import token_digest


class TeamRouting:
    """ASGI middleware: an HTTP request whose bearer token belongs to a team goes to that
    team's app; one without a known token goes to `front`. Other scopes (the lifespan) go on
    to the wrapped app."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        apps: Mapping[str, ASGIApp],
        team_of: Mapping[str, str],
        front: ASGIApp,
    ) -> None:
        self.app = app
        self._apps = apps
        self._team_of = team_of
        self._front = front

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        team = self._team_of.get(_digest(scope))
        if team is None and scope["path"].startswith(LINKS_PATH):
            # Only a hint: the team's app checks the link's signature and finds its proposal.
            hinted = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(TEAM_HINT)
            team = hinted[0] if hinted and hinted[0] in self._apps else None
        await (self._front if team is None else self._apps[team])(scope, receive, send)


def _digest(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token_digest(token.strip())
    return ""
