"""Local stand-ins for remote services this machine cannot reach (Slack's Web API, Telegram's
Bot API, webhook receivers): ASGI apps that speak their protocol, served by a real uvicorn on
127.0.0.1 inside the test's event loop, recording what they were sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from tests.servers import free_port


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Serve `app` on a free loopback port; yield its base URL; stop it at the end."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            if task.done():
                task.result()  # raises why it could not start
            await asyncio.sleep(0.01)
        else:
            raise RuntimeError(f"the fake server on port {port} did not start in 5 s")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)
