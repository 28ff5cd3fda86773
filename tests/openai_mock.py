"""A scriptable OpenAI-compatible chat server for tests: ``python -m tests.openai_mock PORT``.

It speaks ``POST /v1/chat/completions`` and answers each request with the next scripted reply of
the role that asked (read from the system prompt, "You are … (ROLE) at …"), as one tool call.
A control interface under ``/mock`` scripts the replies and injects failures:

* ``POST /mock/script`` ``{"ROLE": [reply, …]}`` appends replies; a reply is ``{"tool", "args"}``,
  ``{"tool", "raw_args"}`` (arguments sent verbatim, e.g. broken JSON) or ``{"text"}``.
* ``POST /mock/faults`` ``[fault, …]`` fails the next requests, one fault each, in order; a fault
  is ``{"status", "retry_after"?, "delay"?, "role"?}`` (``delay`` seconds pass before the answer:
  longer than the client's timeout, it is a timeout; ``role``: only that role's requests take
  it). A failed request consumes no reply.
* ``POST /mock/down`` ``fault`` fails every request until ``POST /mock/down`` ``null``.
* ``GET /mock/log`` lists every request: role, arrival time (monotonic), outcome, messages.

Every request is logged, so a test can count the model calls and see what the model was shown.
`running_mock` starts it for a test; `MockControl` drives it from async code, and `wire_script`
makes the body of ``POST /mock/script`` for sync code.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from qapten.acts import wire_name

from .servers import running_server

ROLE_IN_PROMPT = re.compile(r"You are .* \(([a-z0-9_]+)\) at ")


class Fault(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str | None = None
    """Only a request of this role takes the fault (default: the next request, whoever asks)."""
    status: int = 503
    retry_after: float | None = None
    delay: float = 0.0


class Reply(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tool: str | None = None
    args: dict[str, Any] | None = None
    raw_args: str | None = None
    text: str | None = None


class MockState:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.script: dict[str, list[Reply]] = {}
        self.faults: list[Fault] = []
        self.down: Fault | None = None
        self.log: list[dict[str, Any]] = []


def create_app() -> FastAPI:
    app = FastAPI()
    state = MockState()

    @app.get("/api/v1/healthz")  # what tests.servers.running_server waits for
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/mock/reset")
    async def reset() -> dict[str, str]:
        state.reset()
        return {"status": "reset"}

    @app.post("/mock/script")
    async def script(body: dict[str, list[Reply]]) -> dict[str, int]:
        for role, replies in body.items():
            state.script.setdefault(role, []).extend(replies)
        return {role: len(replies) for role, replies in state.script.items()}

    @app.post("/mock/faults")
    async def faults(body: list[Fault]) -> dict[str, int]:
        state.faults.extend(body)
        return {"queued": len(state.faults)}

    @app.post("/mock/down")
    async def down(body: Fault | None = None) -> dict[str, bool]:
        state.down = body
        return {"down": body is not None}

    @app.get("/mock/log")
    async def log() -> list[dict[str, Any]]:
        return state.log

    @app.post("/v1/chat/completions")
    async def completions(request: Request) -> JSONResponse:
        body = await request.json()
        messages = body.get("messages", [])
        system = next((m["content"] for m in messages if m.get("role") == "system"), "")
        found = ROLE_IN_PROMPT.search(system or "")
        role = found.group(1) if found else "?"
        entry: dict[str, Any] = {
            "role": role,
            "at": time.monotonic(),
            "retry_count": request.headers.get("x-stainless-retry-count"),
            "messages": messages,
        }
        state.log.append(entry)
        fault = state.down or _take_fault(state.faults, role)
        if fault is not None:
            entry["outcome"] = "timeout" if fault.delay else str(fault.status)
            await asyncio.sleep(fault.delay)
            headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
            error = {"error": {"message": "injected failure", "type": "server_error"}}
            return JSONResponse(error, status_code=fault.status, headers=headers)
        replies = state.script.get(role, [])
        if not replies:
            entry["outcome"] = "unscripted"
            error = {"error": {"message": f"no scripted reply left for {role}"}}
            return JSONResponse(error, status_code=400)
        entry["outcome"] = "ok"
        return JSONResponse(_completion(body.get("model", "mock"), replies.pop(0), len(state.log)))

    return app


def _take_fault(faults: list[Fault], role: str) -> Fault | None:
    for i, fault in enumerate(faults):
        if fault.role in (None, role):
            return faults.pop(i)
    return None


def _completion(model: str, reply: Reply, n: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text}
    if reply.tool is not None:
        arguments = reply.raw_args if reply.raw_args is not None else json.dumps(reply.args or {})
        call = {"id": f"call_{n}", "type": "function"}
        message["tool_calls"] = [{**call, "function": {"name": reply.tool, "arguments": arguments}}]
    return {
        "id": f"chatcmpl-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if reply.tool else "stop",
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
    }


@contextmanager
def running_mock(log: Path) -> Iterator[str]:
    """This server in a process of its own on a free loopback port; yields its URL (the API is
    under ``URL/v1``). It is stopped when the block ends; its output goes to `log`."""
    with running_server(
        lambda port: [sys.executable, "-m", "tests.openai_mock", str(port)], log=log
    ) as url:
        yield url


def wire_script(replies: Mapping[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Replies per role, as `qapten.testing` builds them (``use``, ``delegate``, ``deliver``) or
    ``{"tool", "raw_args"}``, as ``POST /mock/script`` takes them: tool names turned into the
    names the model sees."""
    return {
        role: [{**r, "tool": wire_name(r["tool"])} if "tool" in r else r for r in answers]
        for role, answers in replies.items()
    }


class MockControl:
    """The test's side of the control interface (async: tests run inside an event loop)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.base_url = f"{url}/v1"

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            response = await client.request(method, path, json=body)
        response.raise_for_status()
        return response.json()

    async def reset(self) -> None:
        await self._call("POST", "/mock/reset")

    async def script(self, **replies: list[dict[str, Any]]) -> None:
        """Append replies per role (see `wire_script`)."""
        await self._call("POST", "/mock/script", wire_script(replies))

    async def faults(self, *faults: dict[str, Any]) -> None:
        await self._call("POST", "/mock/faults", list(faults))

    async def down(self, status: int = 503) -> None:
        await self._call("POST", "/mock/down", {"status": status})

    async def up(self) -> None:
        await self._call("POST", "/mock/down", None)

    async def log(self, role: str | None = None) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = await self._call("GET", "/mock/log")
        return [e for e in entries if role in (None, e["role"])]


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(create_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
