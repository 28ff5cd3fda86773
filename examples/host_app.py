"""Embed Qapten's JSON API in your own FastAPI app, under a prefix of your choice.

Run with:  python examples/host_app.py               # serves http://127.0.0.1:8000 until Ctrl-C
      or:  python examples/host_app.py --self-test   # starts on a free port, calls it, stops

The host app keeps its own routes (``/``) and mounts ``qapten.api.router(swarm, settings)`` under
``/ops``: ``/ops/healthz``, ``/ops/org``, ``/ops/runs``, ``/ops/proposals``… (the host's ``/docs``
lists them). The host's lifespan enters ``qapten.api.lifespan(swarm)``, which opens the swarm
(and resumes runs a previous process left mid-step) and closes it at shutdown. The token comes
from QAPTEN_ADMIN_TOKEN, or one is made and printed. The scripted model answers one
ticket of the support desk (examples/support_desk/); pass any LangChain chat model to
``Swarm.from_yaml`` instead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from qapten import Swarm
from qapten.api import ApiSettings, lifespan, router
from qapten.testing import ScriptedChatModel, delegate, deliver

ORG = Path(__file__).resolve().parent / "support_desk" / "org.yaml"
SCRIPT = ScriptedChatModel(
    {
        "desk_lead": [delegate(agent="Answer the ticket"), deliver("Refund sent; sorry!")],
        "agent": [deliver("Draft: refund sent; sorry!")],
    }
)


def host_app(swarm: Swarm, settings: ApiSettings) -> FastAPI:
    @asynccontextmanager
    async def host_lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # The host's own start-up and shutdown go around Qapten's.
        async with lifespan(swarm):
            yield

    app = FastAPI(title="My host app", lifespan=host_lifespan)

    @app.get("/")
    async def home() -> dict[str, str]:
        return {"message": "hello from the host"}

    app.include_router(router(swarm, settings), prefix="/ops")
    return app


async def self_test(server: uvicorn.Server, sock: socket.socket, token: str) -> None:
    """Serve in the background, make three requests, stop."""
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            raise SystemExit("the host app did not start (see the log above)")
        await asyncio.sleep(0.05)
    url = "http://{}:{}".format(*sock.getsockname())
    auth = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            for path, headers in (("/", {}), ("/ops/healthz", {}), ("/ops/org", auth)):
                response = await http.get(path, headers=headers)
                response.raise_for_status()
                body = response.json()
                if path == "/ops/org":
                    body = f"{body['name']}: {', '.join(body['roles'])} (root {body['root']})"
                print(f"GET {path} -> {response.status_code} {body}")
    finally:
        server.should_exit = True
        await serving


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--self-test", action="store_true", help="call it once, then stop")
    args = parser.parse_args()
    token = os.environ.get("QAPTEN_ADMIN_TOKEN") or secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory() as folder:  # a throwaway database: keep yours in a file
        swarm = Swarm.from_yaml(ORG, model=SCRIPT, db=f"sqlite:///{folder}/host.db")
        app = host_app(swarm, ApiSettings(admin_token=token))
        if args.self_test:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))  # any free port
                server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
                asyncio.run(self_test(server, sock, token))
            return
        print(f"Host app on http://127.0.0.1:{args.port}/ (Qapten under /ops)")
        if "QAPTEN_ADMIN_TOKEN" not in os.environ:
            print(f"admin token: {token}")
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
