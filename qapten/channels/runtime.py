"""What a server runs for its chat channels: the channels themselves, the notifier that feeds
them, the routes that take their buttons and commands, and their background loops."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter

from qapten.api.deps import ApiContext
from qapten.channels.base import Channel
from qapten.channels.desk import ChatDesk
from qapten.channels.notifier import LinkMaker, Notifier
from qapten.channels.settings import ChannelSettings
from qapten.errors import ConfigurationError

Loop = Callable[[], Coroutine[Any, Any, None]]


@dataclass
class ChatChannels:
    channels: dict[str, Channel]
    notifier: Callable[[], Notifier]
    """Makes the notifier, once the swarm is open (it reads the swarm's store)."""
    routers: list[APIRouter] = field(default_factory=list)
    loops: list[Loop] = field(default_factory=list)
    """Background loops besides the notifier's (Telegram's polling)."""

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the notifier and the loops while the block runs; then stop them and close the
        channels' connections."""
        loops = [self.notifier().run, *self.loops]
        tasks = [
            asyncio.create_task(loop(), name=f"qapten-channel-{index}")
            for index, loop in enumerate(loops)
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for channel in self.channels.values():
                await channel.aclose()


def chat_channels(context: ApiContext) -> ChatChannels | None:
    """The channels of `context`'s settings, ready to run; None when none is configured.

    Raises `ConfigurationError` for settings that name tokens the server does not have."""
    settings = context.settings
    config = settings.channels
    if not config.enabled:
        return None
    check_channels(config, context.tokens.names())
    channels: dict[str, Channel] = {}
    routers: list[APIRouter] = []
    loops: list[Loop] = []
    if config.webhooks:
        from qapten.channels.webhook import WebhookChannel

        channels["webhook"] = WebhookChannel(config.webhooks)
    if config.slack is not None:
        from qapten.channels.slack import SlackChannel
        from qapten.channels.slack_routes import slack_routes

        slack = SlackChannel(config.slack)
        channels["slack"] = slack
        desk = ChatDesk(context, "slack", config.slack.users)
        routers.append(slack_routes(desk, config.slack, slack))
    if config.telegram is not None:
        from qapten.channels.telegram_updates import telegram_parts

        users = {str(user): name for user, name in config.telegram.users.items()}
        desk = ChatDesk(context, "telegram", users)
        telegram, router, poll = telegram_parts(desk, config.telegram, config.telegram_chats())
        channels["telegram"] = telegram
        routers.extend([router] if router is not None else [])
        loops.extend([poll] if poll is not None else [])
    links = None
    if context.links is not None and settings.public_url is not None:
        links = LinkMaker(context.links, settings.public_url)
    every = settings.event_poll_seconds

    def notifier() -> Notifier:
        return Notifier(context.swarm.store, config, channels, links=links, poll_seconds=every)

    return ChatChannels(channels, notifier, routers, loops)


def check_channels(config: ChannelSettings, token_names: Iterable[str]) -> None:
    """Raise `ConfigurationError` unless the channels can run: their libraries are installed,
    and every identity they map to is a token's name (a typo would otherwise refuse its user's
    every tap, long after the server started)."""
    for section, module, name in (
        (config.slack, "slack_sdk", "Slack"),
        (config.telegram, "telegram", "Telegram"),
    ):
        if section is not None and importlib.util.find_spec(module) is None:
            msg = f"channels: {name} needs the chat extra: pip install 'qapten[chat]'"
            raise ConfigurationError(msg)
    known = set(token_names)
    named: list[tuple[str, str]] = []
    if config.slack is not None:
        named += [(f"channels.slack.users.{u}", n) for u, n in config.slack.users.items()]
    if config.telegram is not None:
        named += [(f"channels.telegram.users.{u}", n) for u, n in config.telegram.users.items()]
    named += [
        (f"channels.webhooks.{i}.links_for", hook.links_for)
        for i, hook in enumerate(config.webhooks)
        if hook.links_for
    ]
    for where, name in named:
        if name not in known:
            msg = (
                f"{where}: {name!r} is not the name of a token "
                f"(the names: {', '.join(sorted(known)) or 'none'})"
            )
            raise ConfigurationError(msg)
