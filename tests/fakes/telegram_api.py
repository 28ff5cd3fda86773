"""A fake Telegram Bot API: ``/bot{token}/{method}`` answering as Telegram does
(``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code", "description"}``), with the
state a bot sees (messages per chat, queued updates, the webhook) and what it was sent.

python-telegram-bot posts form data whose non-string values are JSON; JSON bodies are taken
too. Tests queue updates with `push_update` (built by `callback_update` / `text_update`), read
`calls` and `messages`, and make a method fail with `fail_next`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fakes import serving

TOKEN = "123456789:AAF-fake-token-for-tests"
"""The fake's bot token by default; the bot's id is its first part, as with Telegram's."""
TEXT_FIELDS = frozenset({"text", "callback_query_id", "url", "secret_token"})
"""Form fields that stay strings; the others are JSON (numbers, markup) when they parse."""
MAX_CALLBACK_DATA = 64
DEFAULT_ERRORS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    409: "Conflict: terminated by other getUpdates request",
    429: "Too Many Requests: retry after 1",
    500: "Internal Server Error",
    502: "Bad Gateway",
}
JSONDict = dict[str, Any]


class TelegramApiError(Exception):
    """An error answer of the fake (raised by a method, or queued by `fail_next`)."""

    def __init__(self, status: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status, self.description, self.retry_after = status, description, retry_after


class FakeTelegram:
    """One bot's Bot API. Serve `app` (`running` does) and point the bot's base_url at it."""

    def __init__(self, token: str = TOKEN, *, username: str = "QaptenBot") -> None:
        self.token = token
        self.me: JSONDict = {
            "id": int(token.partition(":")[0]),
            "is_bot": True,
            "first_name": "Qapten",
            "username": username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.calls: defaultdict[str, list[JSONDict]] = defaultdict(list)
        """Method → the parameters of each call, failed ones included."""
        self.messages: dict[tuple[int, int], JSONDict] = {}
        """(chat id, message id) → the message as it is now (edits applied)."""
        self.webhook: JSONDict | None = None
        self.queued: list[JSONDict] = []
        """Updates not yet confirmed by a getUpdates with a higher offset."""
        self._update_ids = itertools.count(1)
        self._message_ids: defaultdict[int, itertools.count[int]] = defaultdict(
            lambda: itertools.count(1)
        )
        self._query_ids = itertools.count(1)
        self._failures: defaultdict[str, deque[TelegramApiError]] = defaultdict(deque)
        self._arrived = asyncio.Event()
        self._closing = False
        self._methods: dict[str, Callable[[JSONDict], Awaitable[Any]]] = {
            "getMe": self._get_me,
            "sendMessage": self._send_message,
            "editMessageText": self._edit_message_text,
            "answerCallbackQuery": self._answer_callback_query,
            "getUpdates": self._get_updates,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
        }
        self.app = Starlette(
            routes=[Route("/bot{token}/{method}", self._endpoint, methods=["GET", "POST"])]
        )

    @property
    def bot_id(self) -> int:
        return int(self.me["id"])

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        """Serve the fake; yields the ``api_url`` to give the bot (``http://HOST:PORT/bot``)."""
        async with serving(self.app) as base_url:
            try:
                yield f"{base_url}/bot"
            finally:
                self._closing = True  # ends a getUpdates that waits, so the server can stop
                self._arrived.set()

    # -- the test's side ----------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        times: int = 1,
        *,
        status: int = 500,
        description: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        """Make the next `times` calls of `method` fail with `status` (429: with retry_after)."""
        said = description or DEFAULT_ERRORS.get(status, "Error")
        for _ in range(times):
            self._failures[method].append(TelegramApiError(status, said, retry_after))

    def push_update(self, update: JSONDict) -> int:
        """Queue `update` for getUpdates; returns its update_id."""
        update.setdefault("update_id", next(self._update_ids))
        self.queued.append(update)
        self._arrived.set()
        return int(update["update_id"])

    def user(self, user_id: int, first_name: str = "Someone") -> JSONDict:
        return {"id": user_id, "is_bot": False, "first_name": first_name}

    def chat(self, chat_id: int) -> JSONDict:
        if chat_id < 0:
            return {"id": chat_id, "type": "supergroup", "title": f"Group {chat_id}"}
        return {"id": chat_id, "type": "private", "first_name": f"User {chat_id}"}

    def callback_update(self, *, user_id: int, message: JSONDict, data: str) -> JSONDict:
        """A tap by `user_id` on the button with `data` of the bot's `message`."""
        query_id = next(self._query_ids)
        return {
            "callback_query": {
                "id": str(query_id),
                "from": self.user(user_id),
                "message": message,
                "chat_instance": f"instance-{message['chat']['id']}",
                "data": data,
            }
        }

    def text_update(
        self, *, user_id: int, chat_id: int, text: str, reply_to: JSONDict | None = None
    ) -> JSONDict:
        """A text message by `user_id` in `chat_id`, replying to `reply_to` if given."""
        message = self._new_message(chat_id, self.user(user_id), text)
        if text.startswith("/"):
            length = len(text.split(" ", 1)[0])
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        return {"message": message}

    def sent(self, chat_id: int) -> list[JSONDict]:
        """The bot's messages in `chat_id`, oldest first, as they are now."""
        return [
            m
            for (chat, _), m in sorted(self.messages.items())
            if chat == chat_id and m["from"]["id"] == self.bot_id
        ]

    async def called(self, method: str, times: int = 1, *, within: float = 5.0) -> list[JSONDict]:
        """Wait until `method` was called `times` times (at most `within` seconds); its calls."""
        deadline = time.monotonic() + within
        while len(self.calls[method]) < times:
            if time.monotonic() > deadline:
                got = len(self.calls[method])
                raise AssertionError(f"{method} called {got} times, not {times}, in {within} s")
            await asyncio.sleep(0.01)
        return self.calls[method]

    # -- the bot's side ------------------------------------------------------------------------

    async def _endpoint(self, request: Request) -> JSONResponse:
        if request.path_params["token"] != self.token:
            return _error(TelegramApiError(401, "Unauthorized"))
        method = request.path_params["method"]
        handler = self._methods.get(method)
        if handler is None:
            return _error(TelegramApiError(404, "Not Found"))
        params = await _parameters(request)
        self.calls[method].append(params)
        try:
            if self._failures[method]:
                raise self._failures[method].popleft()
            result = await handler(params)
        except TelegramApiError as exc:
            return _error(exc)
        return JSONResponse({"ok": True, "result": result})

    async def _get_me(self, _params: JSONDict) -> JSONDict:
        return self.me

    async def _send_message(self, params: JSONDict) -> JSONDict:
        chat_id = _required(params, "chat_id")
        text = str(params.get("text") or "")
        if not text:
            raise TelegramApiError(400, "Bad Request: message text is empty")
        if len(text) > 4096:
            raise TelegramApiError(400, "Bad Request: message is too long")
        message = self._new_message(int(chat_id), self.me, text)
        markup = params.get("reply_markup")
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            _check_keyboard(markup)
            message["reply_markup"] = markup  # Telegram echoes inline keyboards only
        replied_id = (params.get("reply_parameters") or {}).get("message_id")
        if replied_id is not None:
            replied = self.messages.get((int(chat_id), int(replied_id)))
            if replied is not None:
                message["reply_to_message"] = replied
            elif not params["reply_parameters"].get("allow_sending_without_reply"):
                raise TelegramApiError(400, "Bad Request: message to be replied not found")
        self.messages[(message["chat"]["id"], message["message_id"])] = message
        return message

    async def _edit_message_text(self, params: JSONDict) -> JSONDict:
        key = (int(_required(params, "chat_id")), int(_required(params, "message_id")))
        message = self.messages.get(key)
        if message is None:
            raise TelegramApiError(400, "Bad Request: message to edit not found")
        markup = params.get("reply_markup")
        if message["text"] == params.get("text") and message.get("reply_markup") == markup:
            raise TelegramApiError(
                400,
                "Bad Request: message is not modified: specified new message content and reply "
                "markup are exactly the same as a current content and reply markup of the message",
            )
        edited = {**message, "text": params.get("text"), "edit_date": int(time.time())}
        edited.pop("reply_markup", None)  # an edit without a keyboard removes it
        if markup is not None:
            _check_keyboard(markup)
            edited["reply_markup"] = markup
        self.messages[key] = edited
        return edited

    async def _answer_callback_query(self, params: JSONDict) -> bool:
        _required(params, "callback_query_id")
        if len(str(params.get("text") or "")) > 200:
            raise TelegramApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        return True

    async def _get_updates(self, params: JSONDict) -> list[JSONDict]:
        if self.webhook is not None:
            raise TelegramApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use "
                "deleteWebhook to delete the webhook first",
            )
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        # An offset confirms every update before it: Telegram forgets them.
        self.queued = [u for u in self.queued if u["update_id"] >= offset]
        deadline = time.monotonic() + float(params.get("timeout") or 0)
        while not self.queued and not self._closing:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)
        return self.queued[:limit]

    async def _set_webhook(self, params: JSONDict) -> bool:
        self.webhook = {"url": _required(params, "url"), "secret": params.get("secret_token")}
        return True

    async def _delete_webhook(self, params: JSONDict) -> bool:
        self.webhook = None
        if params.get("drop_pending_updates"):
            self.queued.clear()
        return True

    def _new_message(self, chat_id: int, sender: JSONDict, text: str) -> JSONDict:
        message_id = next(self._message_ids[chat_id])
        message = {
            "message_id": message_id,
            "from": sender,
            "chat": self.chat(chat_id),
            "date": int(time.time()),
            "text": text,
        }
        self.messages[(chat_id, message_id)] = message
        return message


async def _parameters(request: Request) -> JSONDict:
    params: JSONDict = dict(request.query_params)
    body = await request.body()
    if request.headers.get("content-type", "").startswith("application/json"):
        params.update(json.loads(body or b"{}"))
        return params
    for name, value in parse_qsl(body.decode(), keep_blank_values=True):
        params[name] = value if name in TEXT_FIELDS else _json_or_text(value)
    return params


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def _required(params: JSONDict, name: str) -> Any:
    if params.get(name) in (None, ""):
        raise TelegramApiError(400, f"Bad Request: {name} is empty")
    return params[name]


def _check_keyboard(markup: JSONDict) -> None:
    for row in markup.get("inline_keyboard", []):
        for button in row:
            data = button.get("callback_data")
            if data is not None and len(data.encode()) > MAX_CALLBACK_DATA:
                raise TelegramApiError(400, "Bad Request: BUTTON_DATA_INVALID")


def _error(exc: TelegramApiError) -> JSONResponse:
    body: JSONDict = {"ok": False, "error_code": exc.status, "description": exc.description}
    if exc.retry_after is not None:
        body["parameters"] = {"retry_after": exc.retry_after}
    return JSONResponse(body, status_code=exc.status)
