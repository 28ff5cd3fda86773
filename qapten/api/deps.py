"""Dependencies of the routes, as `Annotated` aliases: the context, the caller, their rights."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPBearer

from qapten.api.auth import Principal, TokenBook
from qapten.api.errors import ApiError
from qapten.api.links import LinkSigner
from qapten.api.schemas import decode_cursor
from qapten.api.settings import ApiSettings, TokenSpec
from qapten.swarm import Swarm


@dataclass(frozen=True)
class ApiContext:
    swarm: Swarm
    settings: ApiSettings
    tokens: TokenBook
    links: LinkSigner | None = None
    """Signs and reads one-click decision links; None when they are off (no ``links_secret``)."""

    @classmethod
    def of(
        cls, swarm: Swarm, settings: ApiSettings, tokens: Iterable[TokenSpec] | None = None
    ) -> ApiContext:
        """The context of an app over `swarm` accepting `tokens` (by default, the settings')."""
        book = TokenBook(settings.all_tokens() if tokens is None else tokens)
        return cls(swarm, settings, book, LinkSigner.of(settings.links_secret))


# The dependencies are `async def` although they never wait: FastAPI runs a plain `def` one in a
# worker thread, a hop to a thread and back on every request for a few lines of Python.
async def get_context(request: Request) -> ApiContext:
    return context_of(request)


def context_of(request: Request) -> ApiContext:
    """The context that the API's routers put on each request they take (qapten.api)."""
    context: ApiContext = request.state.qapten
    return context


Context = Annotated[ApiContext, Depends(get_context)]


async def refuse(
    context: ApiContext,
    request: Request,
    status: int,
    code: str,
    message: str,
    *,
    who: str | None = None,
    run_id: str | None = None,
    path: str | None = None,
) -> ApiError:
    """Record a refused attempt as an event, and make the error to raise. `path` replaces the
    request's in the event when that one holds a secret (a decision link's token)."""
    await context.swarm.store.add_event(
        run_id,
        "access.refused",
        {
            "status": status,
            "method": request.method,
            "path": request.url.path if path is None else path,
            "who": who,
            "reason": message,
        },
    )
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return ApiError(status, code, message, headers=headers)


class BearerCaller(HTTPBearer):
    """The caller that the request's bearer token names; 401 without a known token.

    An `HTTPBearer`, so that the OpenAPI schema says how to authenticate, and the whole lookup
    in one dependency: FastAPI's cost is per dependency, and this one is on every request. (The
    context is read from the request, not taken as a dependency, for the same reason.)
    """

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        credentials = await super().__call__(request)
        context = context_of(request)
        if credentials is None:
            raise await refuse(
                context,
                request,
                401,
                "unauthorized",
                "missing token: send 'Authorization: Bearer TOKEN'",
            )
        principal = context.tokens.principal(credentials.credentials)
        if principal is None:
            raise await refuse(context, request, 401, "unauthorized", "unknown token")
        return principal


_caller = BearerCaller(
    auto_error=False,
    scheme_name="HTTPBearer",
    description="A Qapten token: admin, approver or viewer.",
)
Caller = Annotated[Principal, Depends(_caller)]


async def get_writer(request: Request, context: Context, caller: Caller) -> Principal:
    if not caller.can_write:
        raise await refuse(
            context,
            request,
            403,
            "forbidden",
            f"{caller.name} ({caller.scope}) may not start or cancel runs",
            who=caller.name,
        )
    return caller


Writer = Annotated[Principal, Depends(get_writer)]


async def get_cursor(
    cursor: Annotated[
        str | None, Query(max_length=200, description="next_cursor of a page")
    ] = None,
) -> tuple[datetime, str] | None:
    if cursor is None:
        return None
    try:
        return decode_cursor(cursor)
    except ValueError as exc:
        raise ApiError(422, "invalid_request", f"cursor: {exc}") from exc


Cursor = Annotated[tuple[datetime, str] | None, Depends(get_cursor)]
