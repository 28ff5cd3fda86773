"""Where notices go and who may decide from chat: the ``channels:`` section of the server's
settings file (qapten.api.settings)::

    channels:
      webhooks:
        - name: ops                          # a destination is webhook:ops
          url: https://hooks.example.com/qapten
          secret: env:QAPTEN_OPS_WEBHOOK_SECRET   # HMAC-SHA256 key (env:NAME reads it there)
          links_for: alice                   # proposals carry approve/reject links as alice
      slack:
        bot_token: env:SLACK_BOT_TOKEN
        signing_secret: env:SLACK_SIGNING_SECRET
        channel: C0123456789                 # the default channel
        users: {U024BE7LH: alice}            # Slack user -> Qapten token name
      telegram:
        bot_token: env:TELEGRAM_BOT_TOKEN
        chat_id: -1001234567890              # the default chat
        users: {"123456789": alice}          # only these Telegram users may decide
      routes:                                # the first that matches a proposal wins
        - {role: marketcom, to: ["slack:C0MARKETING"]}
        - {kind: action, act: deploy, to: ["telegram:987654321"]}

A proposal no route matches, and a run's end, go to every channel's default destination.
Secrets may be written ``env:NAME``: the value is read from the environment variable NAME, so
that the settings file can be shared without them.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from qapten.policy import ActKind

NoticeType = Literal[
    "proposal.created",
    "proposal.reminder",
    "proposal.escalated",
    "proposal.expired",
    "proposal.decided",
    "proposal.cancelled",
    "run.done",
    "run.failed",
]
NOTICE_TYPES: tuple[NoticeType, ...] = get_args(NoticeType)
MIN_SECRET = 16


def _from_env(value: object) -> object:
    """``env:NAME`` → the environment variable NAME (which must be set)."""
    if isinstance(value, str) and value.startswith("env:"):
        name = value.removeprefix("env:")
        if name not in os.environ:
            msg = f"the environment variable {name} is not set"
            raise ValueError(msg)
        return os.environ[name]
    return value


Secret = Annotated[SecretStr, BeforeValidator(_from_env)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WebhookSettings(_Section):
    """A receiver of signed JSON notices (qapten.channels.webhook)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")
    url: str = Field(pattern=r"^https?://")
    secret: Secret
    """Signs every body (HMAC-SHA256); the receiver checks it with the same secret."""
    events: tuple[NoticeType, ...] = NOTICE_TYPES
    links_for: str | None = None
    """The Qapten identity (token name) whose one-click approve/reject links each pending
    proposal's notice carries; needs ``links_secret`` and ``public_url``. None: no links."""
    timeout_seconds: float = Field(10.0, gt=0)

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, secret: SecretStr) -> SecretStr:
        if len(secret.get_secret_value()) < MIN_SECRET:
            msg = f"use at least {MIN_SECRET} characters"
            raise ValueError(msg)
        return secret


class SlackSettings(_Section):
    """A Slack app: its bot posts notices; its buttons and slash commands decide."""

    bot_token: Secret
    signing_secret: Secret
    """Slack signs every request it sends to the app with it; unsigned ones are refused."""
    channel: str = Field(min_length=1)
    """The default channel's id."""
    users: dict[str, str] = {}
    """Slack user id → the Qapten token name they decide as; anyone else decides nothing."""
    api_url: str = Field("https://slack.com/api/", pattern=r"^https?://")
    events: tuple[NoticeType, ...] = NOTICE_TYPES


class TelegramSettings(_Section):
    """A Telegram bot: it posts notices with inline buttons and takes commands in its chats."""

    bot_token: Secret
    chat_id: int
    """The default chat."""
    users: dict[int, str] = {}
    """Telegram user id → the Qapten token name they decide as; anyone else decides nothing."""
    allowed_chats: tuple[int, ...] = ()
    """The chats whose buttons and commands are taken (besides `chat_id` and the chats routes
    send to); a message from any other chat is refused, whoever sends it."""
    api_url: str = Field("https://api.telegram.org/bot", pattern=r"^https?://")
    webhook_secret: Secret | None = None
    """Set: Telegram delivers updates to ``POST /telegram/updates`` with this secret in its
    header (run setWebhook with it). None: the server polls getUpdates itself, which needs no
    public address but only one polling server per bot."""
    poll_timeout_seconds: int = Field(30, ge=0, le=50)
    events: tuple[NoticeType, ...] = NOTICE_TYPES


ChannelKind = Literal["slack", "telegram", "webhook"]
_DESTINATION = re.compile(r"^(slack|telegram|webhook)(?::(.+))?$")


class Route(_Section):
    """Proposals matching every field given go to `to`: ``slack``, ``slack:CHANNEL``,
    ``telegram``, ``telegram:CHAT_ID``, ``webhook:NAME``."""

    role: str | None = None
    kind: ActKind | None = None
    act: str | None = None
    to: tuple[str, ...] = Field(min_length=1)

    @field_validator("to")
    @classmethod
    def _destinations(cls, to: tuple[str, ...]) -> tuple[str, ...]:
        for destination in to:
            match = _DESTINATION.match(destination)
            if match is None:
                msg = (
                    f"{destination!r} is not a destination: write slack[:CHANNEL], "
                    "telegram[:CHAT_ID] or webhook:NAME"
                )
                raise ValueError(msg)
            if match[1] == "webhook" and match[2] is None:
                raise ValueError(f"{destination!r}: name the webhook, like webhook:ops")
            if match[1] == "telegram" and match[2] is not None:
                try:
                    int(match[2])
                except ValueError:
                    raise ValueError(f"{destination!r}: a Telegram chat id is a number") from None
        return to

    def matches(self, role: str, kind: str, act: str) -> bool:
        return (
            (self.role is None or self.role == role)
            and (self.kind is None or self.kind.value == kind)
            and (self.act is None or self.act == act)
        )


class ChannelSettings(_Section):
    webhooks: tuple[WebhookSettings, ...] = ()
    slack: SlackSettings | None = None
    telegram: TelegramSettings | None = None
    routes: tuple[Route, ...] = ()
    max_attempts: int = Field(8, ge=1, le=100)
    """Tries of one delivery before it is recorded as failed for good."""
    retry_seconds: float = Field(2.0, gt=0)
    """The wait before the first retry; it doubles with each try after that (up to an hour)."""

    @model_validator(mode="after")
    def _routes_reach_channels(self) -> ChannelSettings:
        for index, route in enumerate(self.routes):
            for destination in route.to:
                channel = destination.partition(":")[0]
                if destination not in self.destinations() and (
                    channel == "webhook" or channel not in self.kinds()
                ):
                    msg = f"routes.{index}.to: {destination!r} is not configured here"
                    raise ValueError(msg)
        names = [hook.name for hook in self.webhooks]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"webhooks: the name {twice[0]!r} is used twice")
        return self

    def kinds(self) -> set[str]:
        """The kinds of channel configured."""
        kinds = {"slack"} if self.slack else set()
        if self.telegram:
            kinds.add("telegram")
        if self.webhooks:
            kinds.add("webhook")
        return kinds

    def destinations(self) -> list[str]:
        """Each channel's default destination: where what no route claims goes."""
        found = [f"webhook:{hook.name}" for hook in self.webhooks]
        if self.slack is not None:
            found.append(f"slack:{self.slack.channel}")
        if self.telegram is not None:
            found.append(f"telegram:{self.telegram.chat_id}")
        return found

    def route(self, role: str, kind: str, act: str) -> list[str]:
        """The destinations of a proposal (``channel:target``), defaults filled in."""
        for route in self.routes:
            if route.matches(role, kind, act):
                return [self.full(destination) for destination in route.to]
        return self.destinations()

    def full(self, destination: str) -> str:
        """``slack`` → ``slack:DEFAULT_CHANNEL``; a full destination as it is."""
        if destination == "slack" and self.slack is not None:
            return f"slack:{self.slack.channel}"
        if destination == "telegram" and self.telegram is not None:
            return f"telegram:{self.telegram.chat_id}"
        return destination

    def telegram_chats(self) -> set[int]:
        """Chats whose Telegram updates are taken: the default, the routed and the listed."""
        if self.telegram is None:
            return set()
        chats = {self.telegram.chat_id, *self.telegram.allowed_chats}
        for route in self.routes:
            for destination in route.to:
                channel, _, target = destination.partition(":")
                if channel == "telegram" and target:
                    chats.add(int(target))
        return chats

    @property
    def enabled(self) -> bool:
        return bool(self.kinds())
