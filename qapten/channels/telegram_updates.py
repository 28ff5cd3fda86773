"""Taking the Telegram bot's updates (qapten.channels.telegram says how to set the bot up):
button taps, replies to the bot's prompts and commands, by polling or at the webhook's route,
decided or run by the chat desk as the Qapten identity each Telegram user is mapped to."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Callable, Coroutine, Set
from typing import Any, NamedTuple

from fastapi import APIRouter, Request, Response
from pydantic import SecretStr
from telegram import CallbackQuery, ForceReply, Message, ReplyParameters, Update
from telegram.error import RetryAfter, TelegramError

from qapten.api.deps import refuse
from qapten.api.errors import ApiError, QaptenRoute
from qapten.channels.desk import ChatDesk, Reply
from qapten.channels.notices import shorten
from qapten.channels.settings import TelegramSettings
from qapten.channels.telegram import (
    BUTTONS,
    MAX_CALLBACK_ANSWER,
    MAX_MESSAGE,
    TelegramChannel,
    retry_after,
)

__all__ = ["TelegramDesk", "TelegramParts", "telegram_parts", "telegram_routes"]

logger = logging.getLogger(__name__)

UPDATES = ("message", "callback_query")
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
PROMPTS = {"revise": "🔁 What should change in proposal", "answer": "💬 Your answer to proposal"}
"""revise and answer need a text: the bot asks for it in a message the user replies to, whose
first words say which decision and proposal the reply is for."""
PROMPT_END = ": reply to this message."


class TelegramDesk:
    """Takes the bot's updates: a button tap or a reply to the bot's prompt decides, a command
    runs, through `desk` (the same checks as the HTTP API). Only `chats` are listened to."""

    def __init__(
        self,
        desk: ChatDesk,
        channel: TelegramChannel,
        chats: Set[int],
        *,
        retry_seconds: float = 1.0,
        max_retry_seconds: float = 30.0,
    ) -> None:
        self.desk = desk
        self.channel = channel
        self.chats = frozenset(chats)
        self._retry = retry_seconds
        self._max_retry = max_retry_seconds

    async def poll(self) -> None:
        """Take updates with getUpdates (long polling) until cancelled; a failure to reach
        Telegram waits (doubling, within bounds) and tries again, forever.

        Telegram keeps an update until a later getUpdates confirms it (its offset passes it),
        so a server stopped while handling one sees it again on restart: decisions are safe to
        take twice (the second is "already decided"). On cancel, the handled ones are confirmed.
        """
        offset: int | None = None
        wait = self._retry
        try:
            while True:
                try:
                    bot = await self.channel.ready()
                    updates = await bot.get_updates(
                        offset=offset,
                        timeout=self.channel.settings.poll_timeout_seconds,
                        allowed_updates=UPDATES,
                    )
                except Exception as exc:  # anything: polling must outlive an outage
                    pause = max(wait, retry_after(exc)) if isinstance(exc, RetryAfter) else wait
                    logger.warning(
                        "telegram: getUpdates failed (%s); again in %g s",
                        self.channel.describe(exc),
                        pause,
                    )
                    await asyncio.sleep(pause)
                    wait = min(wait * 2, self._max_retry)
                    continue
                wait = self._retry
                for update in updates:
                    await self.handle(update)
                    offset = update.update_id + 1
        except asyncio.CancelledError:
            if offset is not None:
                await self._confirm(offset)
            raise

    async def _confirm(self, offset: int) -> None:
        try:
            # Confirms the updates before `offset`; what it returns stays unconfirmed.
            await asyncio.wait_for(self.channel.bot.get_updates(offset=offset, limit=1), 5)
        except Exception as exc:  # stopping: a restart will only see them again
            logger.info("telegram: could not confirm updates (%s)", self.channel.describe(exc))

    async def handle(self, update: Update) -> None:
        """Act on one update (the bot must be `ready`). A failure is logged, never raised: an
        update that cannot be handled must not stop the ones after it."""
        try:
            if update.callback_query is not None:
                await self._tapped(update.callback_query)
            elif update.message is not None:
                await self._message(update.message)
        except Exception:
            logger.exception("telegram: update %s could not be handled", update.update_id)

    async def _tapped(self, query: CallbackQuery) -> None:
        user_id = str(query.from_user.id)
        message = query.message
        decision, _, proposal_id = (query.data or "").partition(":")
        if message is None or message.chat.id not in self.chats:
            where = "this chat" if message is None else f"chat {message.chat.id}"
            reply = await self.desk.refuse(
                user_id, f"Qapten takes no decisions from {where}: nothing was done."
            )
        elif not proposal_id or decision not in BUTTONS:
            reply = Reply("This button is not Qapten's: nothing was done.", ok=False)
        elif decision in PROMPTS:
            reply = await self._prompt(
                user_id, message.chat.id, message.message_id, decision, proposal_id
            )
        else:
            reply = await self.desk.decide(user_id, proposal_id, self.desk.decision(decision, ""))
        try:
            # An alert stays until dismissed: a refusal must not go unnoticed.
            await self.channel.bot.answer_callback_query(
                query.id, shorten(reply.text, MAX_CALLBACK_ANSWER), show_alert=not reply.ok
            )
        except TelegramError as exc:  # too late to answer (15 s); the decision stands
            logger.warning(
                "telegram: a button tap went unanswered (%s)", self.channel.describe(exc)
            )

    async def _prompt(
        self, user_id: str, chat_id: int, message_id: int, decision: str, proposal_id: str
    ) -> Reply:
        """Ask for the feedback or answer as a reply to a message of the bot."""
        caller = await self.desk.caller(user_id)  # spare them writing text that is refused
        if isinstance(caller, Reply):
            return caller
        await self._say(
            chat_id,
            f"{PROMPTS[decision]} {proposal_id}{PROMPT_END}",
            reply_to=message_id,
            markup=ForceReply(input_field_placeholder=f"{decision} {proposal_id}"),
        )
        return Reply("Reply to the bot's message with your text.", ok=True)

    async def _message(self, message: Message) -> None:
        if message.from_user is None:  # a channel's post
            return
        user_id = str(message.from_user.id)
        text = (message.text or "").strip()
        prompted = self._prompted(message.reply_to_message)
        if prompted is None and not _command_for(text, self.channel.bot.username):
            return  # talk in a group the bot is in, or another bot's command: not for Qapten
        if message.chat.id not in self.chats:
            # Answered rather than ignored (and recorded): whoever sets the bot up learns the
            # id of the chat to allow, and anyone else learns that nothing happened.
            reply: Reply | None = await self.desk.refuse(
                user_id,
                f"This chat ({message.chat.id}) may not command Qapten: nothing was done.",
            )
        elif prompted is not None:
            reply = await self._decide_with(user_id, *prompted, text)
        else:
            reply = await self.desk.command(user_id, text)
        if reply is not None:
            await self._say(message.chat.id, reply.text, reply_to=message.message_id)

    def _prompted(self, replied: Message | None) -> tuple[str, str] | None:
        """(decision, proposal id) when `replied` is one of the bot's prompts for a text."""
        if replied is None or replied.from_user is None or replied.text is None:
            return None
        if replied.from_user.id != self.channel.bot.id:
            return None  # someone's message that merely looks like a prompt
        for decision, prompt in PROMPTS.items():
            if replied.text.startswith(f"{prompt} ") and replied.text.endswith(PROMPT_END):
                return decision, replied.text[len(prompt) + 1 : -len(PROMPT_END)]
        return None

    async def _decide_with(self, user_id: str, decision: str, proposal_id: str, text: str) -> Reply:
        if not text:
            return Reply(
                "Reply with some text (a photo or sticker says nothing): nothing was done.",
                ok=False,
            )
        return await self.desk.decide(user_id, proposal_id, self.desk.decision(decision, text))

    async def _say(
        self,
        chat_id: int,
        text: str,
        *,
        reply_to: int,
        markup: ForceReply | None = None,
    ) -> None:
        try:
            await self.channel.bot.send_message(
                chat_id,
                shorten(text, MAX_MESSAGE),
                reply_markup=markup,
                reply_parameters=ReplyParameters(reply_to, allow_sending_without_reply=True),
            )
        except TelegramError as exc:  # the user sees no answer; what was done is done
            logger.warning(
                "telegram: could not answer in chat %s (%s)", chat_id, self.channel.describe(exc)
            )


def telegram_routes(updates: TelegramDesk, secret: SecretStr) -> APIRouter:
    """``POST /telegram/updates``, where Telegram delivers updates in webhook mode, each with
    `secret` in its ``X-Telegram-Bot-Api-Secret-Token`` header; anything else gets a 401."""
    routes = APIRouter(include_in_schema=False, route_class=QaptenRoute)
    expected = secret.get_secret_value().encode()

    @routes.post("/telegram/updates")
    async def take_update(request: Request) -> Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, expected):
            message = f"missing or wrong {SECRET_HEADER} header"
            raise await refuse(updates.desk.context, request, 401, "unauthorized", message)
        try:
            body = json.loads(await request.body())
            # Parsing what a sender made: python-telegram-bot raises anything on bad input.
            update = Update.de_json(body, updates.channel.bot) if isinstance(body, dict) else None
        except Exception:
            update = None
        if update is None:
            raise ApiError(400, "bad_request", "the body is not a Telegram update")
        try:
            await updates.channel.ready()
        except TelegramError as exc:  # a 5xx: Telegram delivers the update again later
            message = f"Telegram cannot be reached: {updates.channel.describe(exc)}"
            raise ApiError(503, "unavailable", message) from exc
        await updates.handle(update)
        return Response(status_code=200)

    return routes


class TelegramParts(NamedTuple):
    channel: TelegramChannel
    routes: APIRouter | None
    """The webhook's route, in webhook mode (to include in the app)."""
    poll: Callable[[], Coroutine[Any, Any, None]] | None
    """The polling loop, in polling mode (to run in the app's lifespan, cancelled at the end)."""


def telegram_parts(desk: ChatDesk, settings: TelegramSettings, chats: Set[int]) -> TelegramParts:
    """The channel that posts, and what takes updates from `chats`: a route when
    ``webhook_secret`` is set, else a polling loop."""
    channel = TelegramChannel(settings)
    updates = TelegramDesk(desk, channel, chats)
    if settings.webhook_secret is not None:
        return TelegramParts(channel, telegram_routes(updates, settings.webhook_secret), None)
    return TelegramParts(channel, None, updates.poll)


def _command_for(text: str, username: str) -> bool:
    """`text` is a command, and not one for another bot of the group (``/start@OtherBot``)."""
    if not text.startswith("/"):
        return False
    _, at, addressee = text.split(maxsplit=1)[0].partition("@")
    return not at or addressee.lower() == username.lower()
