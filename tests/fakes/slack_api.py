"""A fake Slack: the Web API methods Qapten calls (chat.postMessage, chat.update, views.open,
auth.test) and the ``response_url`` of clicks, recording every call; and `signed_request`, which
signs a request the way Slack does, written from Slack's published scheme (not with slack-sdk)
so that the app's verifier is checked against an independent signer.

    fake = FakeSlack()
    async with fake.serve() as api_url:        # SlackSettings(api_url=api_url, ...)
        fake.fail("chat.postMessage", error="ratelimited", status=429)
        ...
        fake.calls_of("chat.postMessage")      # the params of each call, in order
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.fakes import serving

BOT_TOKEN = "xoxb-fake-bot-token"


def signed_request(secret: str, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack sends with `body`: ``v0=`` HMAC-SHA256, keyed with the signing
    secret, of ``v0:TIMESTAMP:BODY``."""
    at = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + at.encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": at,
        "X-Slack-Signature": f"v0={digest}",
    }


@dataclass(frozen=True)
class Call:
    method: str
    params: dict[str, Any]
    """The JSON body, or the form's fields."""


@dataclass(frozen=True)
class _Failure:
    error: str | None
    status: int
    retry_after: int | None

    def response(self) -> Response:
        headers = {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}
        if self.error is None:  # what a proxy in front of Slack answers
            return PlainTextResponse("upstream failed", self.status, headers=headers)
        return JSONResponse({"ok": False, "error": self.error}, self.status, headers=headers)


class FakeSlack:
    def __init__(self, token: str = BOT_TOKEN) -> None:
        self.token = token
        self.calls: list[Call] = []
        self.replies: list[dict[str, Any]] = []
        """The bodies posted to response URLs, each with its URL's ``key``."""
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        """(channel, ts) → the message as it is now."""
        self.base_url = ""
        self._failures: dict[str, list[_Failure]] = {}
        self._stamps = itertools.count(100)
        self._methods: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "chat.postMessage": self._post,
            "chat.update": self._update,
            "views.open": self._open_view,
            "auth.test": self._auth_test,
        }
        self.app = Starlette(
            routes=[
                Route("/api/{method}", self._api, methods=["POST"]),
                Route("/response/{key}", self._response, methods=["POST"]),
            ]
        )

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        """Serve the fake; yield its Web API's base URL (``.../api/``)."""
        async with serving(self.app) as base_url:
            self.base_url = base_url
            yield f"{base_url}/api/"

    def response_url(self, key: str = "1") -> str:
        return f"{self.base_url}/response/{key}"

    def fail(
        self,
        method: str,
        *,
        error: str | None = "internal_error",
        status: int = 200,
        times: int = 1,
        retry_after: int | None = None,
    ) -> None:
        """Answer the next `times` calls of `method` with `error` (None: a plain-text body)
        and HTTP `status`, whatever they ask."""
        failure = _Failure(error, status, retry_after)
        self._failures.setdefault(method, []).extend([failure] * times)

    def calls_of(self, method: str) -> list[dict[str, Any]]:
        return [call.params for call in self.calls if call.method == method]

    async def _api(self, request: Request) -> Response:
        method = request.path_params["method"]
        if request.headers.get("content-type", "").startswith("application/json"):
            params: dict[str, Any] = await request.json()
        else:
            params = {key: str(value) for key, value in (await request.form()).items()}
        self.calls.append(Call(method, params))
        failures = self._failures.get(method)
        if failures:
            return failures.pop(0).response()
        authorization = request.headers.get("authorization")
        if authorization is None:
            return JSONResponse({"ok": False, "error": "not_authed"})
        if authorization != f"Bearer {self.token}":
            return JSONResponse({"ok": False, "error": "invalid_auth"})
        handler = self._methods.get(method)
        if handler is None:
            return JSONResponse({"ok": False, "error": "unknown_method"})
        return JSONResponse(handler(params))

    def _post(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = params.get("channel")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not params.get("text") and not params.get("blocks"):
            return {"ok": False, "error": "no_text"}
        ts = f"1700000000.{next(self._stamps):06d}"
        message = {
            "ts": ts,
            "text": params.get("text", ""),
            "blocks": params.get("blocks", []),
            "thread_ts": params.get("thread_ts"),
        }
        self.messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _update(self, params: dict[str, Any]) -> dict[str, Any]:
        key = (params.get("channel", ""), params.get("ts", ""))
        if key not in self.messages:
            return {"ok": False, "error": "message_not_found"}
        message = self.messages[key]
        message.update(text=params.get("text", ""), blocks=params.get("blocks", []))
        return {"ok": True, "channel": key[0], "ts": key[1], "text": message["text"]}

    def _open_view(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("trigger_id") or not isinstance(params.get("view"), dict):
            return {"ok": False, "error": "invalid_arguments"}
        return {"ok": True, "view": {**params["view"], "id": f"V{next(self._stamps)}"}}

    def _auth_test(self, _params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "team": "Fake", "user": "qapten", "team_id": "T0", "user_id": "U0BOT"}

    async def _response(self, request: Request) -> Response:
        self.replies.append({"key": request.path_params["key"], **(await request.json())})
        return PlainTextResponse("ok")


def click(
    user: str, decision: str, proposal_id: str, response_url: str, *, channel: str = "C0QAPTEN"
) -> dict[str, Any]:
    """A ``block_actions`` payload as Slack sends it when a button of a message is clicked."""
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": "T0"},
        "trigger_id": "1337.42.trigger",
        "response_url": response_url,
        "channel": {"id": channel},
        "container": {"type": "message", "channel_id": channel, "message_ts": "1.1"},
        "actions": [
            {
                "type": "button",
                "action_id": f"qapten:{decision}",
                "block_id": "qapten:decide",
                "value": proposal_id,
                "action_ts": "1.2",
            }
        ],
    }
