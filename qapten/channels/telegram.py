"""Telegram: a bot posts the notices in its chats with a button per decision; taps, replies
and commands there decide, as the Qapten identity each Telegram user is mapped to. This
module posts and edits the messages; qapten.channels.telegram_updates takes the updates.

Setting it up (the ``telegram:`` section, qapten.channels.settings):

1. Make a bot with @BotFather (``/newbot``); its token is ``bot_token``. In a group the bot
   needs no admin rights: privacy mode lets it see commands and replies to its own messages.
2. ``chat_id`` is the chat it posts to by default; ``users`` maps each decider's Telegram
   user id to their token name. A command sent from a chat not yet allowed is answered with
   that chat's id, to copy into the settings.
3. Updates come by polling (the default: no public address needed, one server per bot), or by
   webhook: set ``webhook_secret`` and register ``https://YOUR_HOST/telegram/updates`` once,
   ``curl https://api.telegram.org/botTOKEN/setWebhook -d url=URL -d secret_token=SECRET``.
"""

from __future__ import annotations

import asyncio
import warnings
from datetime import timedelta

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, ReplyParameters
from telegram.error import (
    BadRequest,
    ChatMigrated,
    EndPointNotFound,
    Forbidden,
    InvalidToken,
    RetryAfter,
    TelegramError,
)
from telegram.warnings import PTBDeprecationWarning

from qapten.channels.base import DeliveryFailed, MessageRef
from qapten.channels.notices import Notice, shorten
from qapten.channels.settings import TelegramSettings

__all__ = ["TelegramChannel", "retry_after"]

MAX_MESSAGE = 4096
MAX_CALLBACK_ANSWER = 200
"""Telegram's limits, in characters, on a message and on a button tap's answer."""
BUTTONS = {
    "approve": "✅ Approve",
    "reject": "❌ Reject",
    "revise": "🔁 Revise",
    "answer": "💬 Answer",
}
# A button's callback_data is "DECISION:PROPOSAL_ID", within Telegram's 64 bytes: the longest
# decision is 7 characters and proposal ids are at most 40.


class TelegramChannel:
    """Posts notices with a bot; a closing notice turns the proposal's message into its
    outcome, without buttons. Messages are plain text, so a payload can never break markup."""

    kind = "telegram"

    def __init__(self, settings: TelegramSettings) -> None:
        self.settings = settings
        self._token = settings.bot_token.get_secret_value()
        self.bot = Bot(self._token, base_url=settings.api_url)
        self._starting = asyncio.Lock()

    async def ready(self) -> Bot:
        """The bot, initialised (its getMe answered, which gives its id) on first use.
        Raises `TelegramError` while Telegram cannot be reached or refuses the token."""
        async with self._starting:  # one getMe, however many senders wait for it
            await self.bot.initialize()  # does nothing once done
        return self.bot

    async def send(
        self, notice: Notice, target: str, posted: MessageRef | None
    ) -> MessageRef | None:
        try:
            chat_id = int(target)
        except ValueError:
            raise DeliveryFailed(f"{target!r} is not a Telegram chat id", permanent=True) from None
        try:
            bot = await self.ready()
            if notice.closes:
                return await self._close(bot, notice, posted)
            answered = _message_id(posted) if posted is not None else None
            message = await bot.send_message(
                chat_id=chat_id,
                text=_text(notice, notice.details(), _id_line(notice)),
                reply_markup=_keyboard(notice),
                # A reminder or an escalation answers the proposal's first message, if it is
                # still there.
                reply_parameters=None
                if answered is None
                else ReplyParameters(answered, allow_sending_without_reply=True),
            )
        except TelegramError as exc:
            raise self._failure(exc) from exc
        return {"chat_id": message.chat_id, "message_id": message.message_id}

    async def _close(
        self, bot: Bot, notice: Notice, posted: MessageRef | None
    ) -> MessageRef | None:
        if posted is None:
            return None  # the proposal was never posted here: nothing shows stale buttons
        message_id = _message_id(posted)
        chat_id = posted.get("chat_id")
        if message_id is None or not isinstance(chat_id, int):
            raise DeliveryFailed(f"{posted!r} is not a Telegram message", permanent=True)
        try:
            # Without a reply_markup the edit drops the buttons.
            await bot.edit_message_text(
                _text(notice, notice.outcome()), chat_id=chat_id, message_id=message_id
            )
        except BadRequest as exc:
            # The message shows this already (an expiry after a decision, a retried edit).
            if "message is not modified" not in exc.message.lower():
                raise
        return {"chat_id": chat_id, "message_id": message_id}

    def describe(self, exc: BaseException) -> str:
        """`exc` as a line to log or keep, without the bot token (python-telegram-bot puts it
        in some messages, and it is in every URL)."""
        return f"{type(exc).__name__}: {str(exc).replace(self._token, '<bot token>')}"

    def _failure(self, exc: TelegramError) -> DeliveryFailed:
        said = self.describe(exc)
        match exc:
            case RetryAfter():
                wait = retry_after(exc)
                return DeliveryFailed(f"Telegram asks to wait {wait:g} s: {said}", retry_after=wait)
            case InvalidToken():
                return DeliveryFailed(
                    f"Telegram refused the bot token ({said}): check channels.telegram.bot_token",
                    permanent=True,
                )
            case ChatMigrated():
                return DeliveryFailed(
                    f"the chat became chat {exc.new_chat_id}: use that id in the settings",
                    permanent=True,
                )
            # BadRequest before the NetworkError it derives from: sent again, it fails again.
            case BadRequest() | Forbidden() | EndPointNotFound():
                return DeliveryFailed(said, permanent=True)
        return DeliveryFailed(said)  # TimedOut, NetworkError and the rest: worth another try

    async def aclose(self) -> None:
        await self.bot.shutdown()


def _text(notice: Notice, *more: str) -> str:
    parts = (notice.headline(), *more, notice.outcome())
    return shorten("\n\n".join(part for part in parts if part), MAX_MESSAGE)


def _id_line(notice: Notice) -> str:
    """Names the proposal, for the commands that take its id."""
    return "" if notice.proposal is None else f"id: {notice.proposal.id}"


def _keyboard(notice: Notice) -> InlineKeyboardMarkup | None:
    decisions = notice.decisions()
    if notice.proposal is None or not decisions:
        return None
    proposal_id = notice.proposal.id
    row = [InlineKeyboardButton(BUTTONS[d], callback_data=f"{d}:{proposal_id}") for d in decisions]
    return InlineKeyboardMarkup([row])


def _message_id(posted: MessageRef) -> int | None:
    message_id = posted.get("message_id")
    return message_id if isinstance(message_id, int) else None


def retry_after(exc: RetryAfter) -> float:
    """How long Telegram asks to wait before the next call, in seconds."""
    with warnings.catch_warnings():
        # python-telegram-bot 22 warns that `retry_after` is to become a timedelta: take both.
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        wait = exc.retry_after
    return wait.total_seconds() if isinstance(wait, timedelta) else float(wait)
