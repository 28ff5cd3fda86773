"""The HTTP control plane: `create_app(swarm)` for a whole server, `router(swarm)` to mount the
JSON API inside another FastAPI app, `add_limits(app, settings)` to guard the app that serves it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, nullcontext

from fastapi import APIRouter, Depends, FastAPI, Request

from qapten.api.deps import ApiContext
from qapten.api.limits import add_limits
from qapten.api.routes import deliveries, events, metrics, org, proposals, runs
from qapten.api.settings import ApiSettings, TokenSpec
from qapten.errors import ConfigurationError
from qapten.foreground import ForegroundRequests
from qapten.swarm import Swarm

API_PREFIX = "/api/v1"

__all__ = [
    "API_PREFIX",
    "ApiSettings",
    "add_limits",
    "create_app",
    "create_teams_app",
    "lifespan",
    "router",
]


@asynccontextmanager
async def lifespan(swarm: Swarm) -> AsyncIterator[None]:
    """Open `swarm` (and resume the runs a stopped server left mid-step), close it at the end.

    For a host app that mounts `router`: ``async with lifespan(swarm): yield`` in its own lifespan.
    """
    await swarm.open()
    await swarm.resume_all()
    try:
        yield
    finally:
        await swarm.close()


def router(
    swarm: Swarm,
    settings: ApiSettings | None = None,
    *,
    tokens: Iterable[TokenSpec] | None = None,
) -> APIRouter:
    """The JSON API over `swarm`, to include in any FastAPI app (open the swarm in its lifespan).

    `tokens` are the ones it accepts (by default, every token of `settings`). The router brings
    no body size, rate or CORS limits: those are middlewares of the whole app, which the host
    owns. ``add_limits(app, settings, api_prefix=...)`` installs Qapten's. Nor does it serve
    the pages of decision links: without them, making links answers 404 ``links_off``.
    """
    settings = settings or ApiSettings.load()
    api = APIRouter()
    _include_api(api, ApiContext.of(swarm, settings, tokens))
    return api


_RESOURCES = (proposals, runs, events, deliveries, org, metrics)
"""Proposals first: FastAPI tries the routes in order, and deciding is the busiest request."""


def _include_api(target: FastAPI | APIRouter, context: ApiContext, prefix: str = "") -> None:
    """Include each resource's router in `target` itself, not through a router of them all:
    FastAPI matches a request anew at every level of included routers."""

    # Dependencies are `async def` although they never wait: FastAPI runs a plain `def` one in
    # a worker thread, a hop to a thread and back on every request for a one-line function.
    async def bind(request: Request) -> None:
        request.state.qapten = context

    for module in _RESOURCES:
        target.include_router(module.router, prefix=prefix, dependencies=[Depends(bind)])


def create_app(
    swarm: Swarm,
    settings: ApiSettings | None = None,
    *,
    tokens: Iterable[TokenSpec] | None = None,
    opens_swarm: bool = True,
) -> FastAPI:
    """A FastAPI app serving the API under /api/v1, the web inbox at / and the pages of signed
    decision links at /links/; it opens and closes `swarm` with itself (unless not
    `opens_swarm`: then whoever mounts it does). When ``settings.channels`` names chat
    channels or webhooks, it runs their notifier too and takes their requests (/slack/…,
    /telegram/…): see qapten.channels.

    It is guarded by `add_limits`: bodies over ``settings.max_body_bytes`` get 413, callers over
    ``settings.rate_limit`` get 429 with ``Retry-After``, and CORS is off unless
    ``settings.cors_origins`` names some origins.
    """
    settings = settings or ApiSettings.load()
    context = ApiContext.of(swarm, settings, tokens)
    # Imported here: a server with no chat channel loads none of their libraries.
    from qapten.channels.runtime import chat_channels

    channels = chat_channels(context)
    if channels is not None and not opens_swarm:
        msg = (
            "channels: chat channels and webhooks run with the app that opens the swarm; "
            "a deployment of several org charts has none"
        )
        raise ConfigurationError(msg)

    @asynccontextmanager
    async def serving(_app: FastAPI) -> AsyncIterator[None]:
        async with lifespan(swarm), channels.running() if channels else nullcontext():
            yield

    app = FastAPI(
        title=f"Qapten — {swarm.chart.name}",
        summary="Approve, reject, edit or answer what the agents propose.",
        version="1",
        lifespan=serving if opens_swarm else None,
    )
    _include_api(app, context, API_PREFIX)
    # Imported here: the web inbox is a client of this API and is only served by a whole app.
    from qapten.web import web_router
    from qapten.web.links import link_pages

    app.include_router(web_router(api_prefix=API_PREFIX))
    # The decision links' pages: their signed token is their credential, not a bearer token.
    app.include_router(link_pages(context))
    # Slack's and Telegram's requests to the app: signed by them, not bearer tokens either.
    for channel_routes in channels.routers if channels else []:
        app.include_router(channel_routes)
    add_limits(app, settings, api_prefix=API_PREFIX)
    # Outermost: every request, refused or not, goes before the steps of this process's runs.
    app.add_middleware(ForegroundRequests, foreground=swarm.foreground)
    return app


def create_teams_app(swarms: Mapping[str, Swarm], settings: ApiSettings | None = None) -> FastAPI:
    """One app for a deployment of several teams (qapten.teams), at the same URLs as
    `create_app`: the bearer token says which team a request is for.

    Each team has an app of its own that knows only its swarm and its tokens, so a token of
    one team reaches nothing of another (an id of another team's run is a 404). Requests
    without a known token (the inbox's pages, ``/healthz``, refusals) are answered by the
    first team's app. The app opens and closes every swarm with itself.
    """
    from qapten.api.teams import TeamRouting

    settings = settings or ApiSettings.load()
    if settings.channels.enabled:
        msg = (
            "channels: chat channels and webhooks serve a deployment of one org chart; "
            "serve each team with channels on its own"
        )
        raise ConfigurationError(msg)
    apps: dict[str, FastAPI] = {}
    team_of: dict[str, str] = {}
    for team, swarm in swarms.items():
        tokens = settings.team_tokens(team, swarms.keys())
        apps[team] = create_app(swarm, settings, tokens=tokens, opens_swarm=False)
        team_of.update({spec.sha256: team for spec in tokens})

    @asynccontextmanager
    async def all_teams(_app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for swarm in swarms.values():
                await stack.enter_async_context(lifespan(swarm))
            yield

    app = FastAPI(title="Qapten teams", lifespan=all_teams)
    app.add_middleware(TeamRouting, apps=apps, team_of=team_of, front=next(iter(apps.values())))
    return app
