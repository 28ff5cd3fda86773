"""The web inbox: server-rendered pages over the JSON API, with a little vanilla JavaScript.

The pages hold no data, so they need no token: their script reads the token from the URL fragment
(``/#token=...``, which never reaches the server), keeps it in ``sessionStorage`` and fetches
everything from the JSON API, rendering agent text with ``textContent`` only. A strict
Content-Security-Policy (scripts from this server only) is a second wall against injected markup.

The pages of signed decision links (links.py) are the exception: the signed token in their URL
is their credential, they show one proposal from the server and decide it with a plain form.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse

from qapten.web.pages import PAGE_HEADERS, TEMPLATES

__all__ = ["web_router"]

_HERE = Path(__file__).parent
_STATIC = _HERE / "static"
_MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
# Only the files shipped here are served: no path from the URL ever touches the file system.
_STATIC_FILES = {path.name: path for path in _STATIC.iterdir() if path.suffix in _MEDIA_TYPES}

RunId = Annotated[str, PathParam(min_length=1, max_length=200)]


def web_router(*, api_prefix: str = "/api/v1") -> APIRouter:
    """The inbox at ``/``, a run page at ``/runs/{run_id}`` and their static files.

    `api_prefix` is where the JSON API is mounted in the same app (same origin).
    """
    web = APIRouter(include_in_schema=False)

    def page(request: Request, template: str, title: str, **extra: str) -> HTMLResponse:
        # Templates build their own links with url_for, so the pages work under any prefix.
        context = {"title": title, "api": api_prefix.rstrip("/"), **extra}
        return TEMPLATES.TemplateResponse(request, template, context, headers=PAGE_HEADERS)

    @web.get("/", response_class=HTMLResponse, name="qapten_inbox")
    async def inbox(request: Request) -> HTMLResponse:
        return page(request, "inbox.html", "Inbox")

    @web.get("/runs/{run_id}", response_class=HTMLResponse, name="qapten_run")
    async def run_page(request: Request, run_id: RunId) -> HTMLResponse:
        return page(request, "run.html", "Run", run_id=run_id)

    @web.get("/static/{name}", name="qapten_static")
    async def static(name: str) -> Response:
        path = _STATIC_FILES.get(name)
        if path is None:
            raise HTTPException(404, f"no static file {name!r}")
        return FileResponse(
            path,
            media_type=_MEDIA_TYPES[path.suffix],
            # Revalidate each time (cheap, with ETag) so an upgraded server is never half-cached.
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    return web
