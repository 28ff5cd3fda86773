"""The HTTP control plane: `create_app(swarm)` for a whole server, `router(swarm)` to mount the
JSON API inside another FastAPI app, `add_limits(app, settings)` to guard the app that serves it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Request

from qapten.api.auth import TokenBook
from qapten.api.deps import ApiContext
from qapten.api.limits import add_limits
from qapten.api.routes import events, metrics, org, proposals, runs
from qapten.api.settings import ApiSettings
from qapten.swarm import Swarm

API_PREFIX = "/api/v1"

__all__ = ["API_PREFIX", "ApiSettings", "add_limits", "create_app", "lifespan", "router"]


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


def router(swarm: Swarm, settings: ApiSettings | None = None) -> APIRouter:
    """The JSON API over `swarm`, to include in any FastAPI app (open the swarm in its lifespan).

    The router brings no body size, rate or CORS limits: those are middlewares of the whole app,
    which the host owns. ``add_limits(app, settings, api_prefix=...)`` installs Qapten's.
    """
    settings = settings or ApiSettings.load()
    context = ApiContext(swarm=swarm, settings=settings, tokens=TokenBook(settings.all_tokens()))

    # Dependencies are `async def` although they never wait: FastAPI runs a plain `def` one in
    # a worker thread, a hop to a thread and back on every request for a one-line function.
    async def bind(request: Request) -> None:
        request.state.qapten = context

    api = APIRouter(dependencies=[Depends(bind)])
    for resource in (runs.router, proposals.router, events.router, org.router, metrics.router):
        api.include_router(resource)
    return api


def create_app(swarm: Swarm, settings: ApiSettings | None = None) -> FastAPI:
    """A FastAPI app serving the API under /api/v1 and the web inbox at /; it opens and closes
    `swarm` with itself.

    It is guarded by `add_limits`: bodies over ``settings.max_body_bytes`` get 413, callers over
    ``settings.rate_limit`` get 429 with ``Retry-After``, and CORS is off unless
    ``settings.cors_origins`` names some origins.
    """
    settings = settings or ApiSettings.load()
    app = FastAPI(
        title=f"Qapten — {swarm.chart.name}",
        summary="Approve, reject, edit or answer what the agents propose.",
        version="1",
        lifespan=lambda _app: lifespan(swarm),
    )
    app.include_router(router(swarm, settings), prefix=API_PREFIX)
    # Imported here: the web inbox is a client of this API and is only served by a whole app.
    from qapten.web import web_router

    app.include_router(web_router(api_prefix=API_PREFIX))
    add_limits(app, settings, api_prefix=API_PREFIX)
    return app
