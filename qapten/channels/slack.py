"""Slack: the bot posts each notice with its decisions as buttons, turns the message into the
outcome once the proposal is decided, and takes the buttons, forms and slash commands of the
Slack users that ``users`` maps to Qapten identities. This module posts and updates the
messages; qapten.channels.slack_routes takes Slack's requests.

Setting up the Slack app (api.slack.com/apps, "Create New App" for your workspace):

- OAuth & Permissions: the bot scopes ``chat:write`` and ``commands``; install the app and put
  its bot token (``xoxb-…``) in ``bot_token``; invite the bot to every channel it posts to.
- Basic Information: the signing secret goes in ``signing_secret``.
- Interactivity & Shortcuts: on, with the request URL ``https://QAPTEN_HOST/slack/actions``.
- Slash Commands: ``/qapten`` (and, if you like, ``/inbox``, ``/approve``…) with the request URL
  ``https://QAPTEN_HOST/slack/commands``; ``/qapten approve ID`` is ``/approve ID``.

A request to either URL must carry Slack's signature, made with the signing secret less than
five minutes ago; any other gets 401 and is recorded as ``access.refused``. A click is
acknowledged at once (Slack waits three seconds at most), then decided, and its outcome is
shown to the clicker alone through the ``response_url`` Slack sent with it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from slack_sdk.webhook.async_client import AsyncWebhookClient

from qapten.channels.base import DeliveryFailed, MessageRef, seconds_to_wait
from qapten.channels.notices import Notice, shorten
from qapten.channels.settings import SlackSettings

__all__ = ["SlackChannel", "escape"]

logger = logging.getLogger(__name__)

ACTION_PREFIX = "qapten:"
"""Buttons' action ids are ``qapten:approve`` and the like; their value is the proposal id."""
ACTIONS_BLOCK = "qapten:decide"
FORM_CALLBACK = "qapten:form"
FORM_BLOCK = "qapten:text"
FORM_INPUT = "qapten:text-input"
SLACK_HOOKS = "https://hooks.slack.com"
TIMEOUT_SECONDS = 10
SECTION_LIMIT = 3000
"""Characters of a Block Kit section's text (Slack refuses longer ones)."""
FORM_TEXT_LIMIT = 3000
FOLLOW_UPS = frozenset({"proposal.reminder", "proposal.escalated"})
"""Notices posted as a reply in the thread of the proposal's first message."""
TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
"""Slack's errors that a later try may not get; any other error is the request's own."""
NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)

_BUTTONS: dict[str, tuple[str, str | None]] = {
    "approve": ("Approve", "primary"),
    "reject": ("Reject", "danger"),
    "revise": ("Send back…", None),
    "answer": ("Answer…", None),
}
FORMS = {"revise": ("Send back", "What should change?"), "answer": ("Answer", "Your answer")}
"""Decisions that need a text, asked in a modal: its title and its input's label."""


class SlackChannel:
    """Posts notices with Slack's Web API (slack-sdk's `AsyncWebClient`), and answers clicks."""

    kind = "slack"

    def __init__(self, settings: SlackSettings) -> None:
        self.settings = settings
        # Retries are the notifier's, with its backoff and its record of attempts: the client's
        # own would only hide them.
        self.web = AsyncWebClient(
            token=settings.bot_token.get_secret_value(),
            base_url=settings.api_url,
            timeout=TIMEOUT_SECONDS,
            retry_handlers=[],
        )
        self._reply_origins = {_origin(SLACK_HOOKS), _origin(settings.api_url)}

    def _session(self) -> aiohttp.ClientSession:
        # One session (and its pooled connections) for every call, made on first use because
        # aiohttp binds it to the running event loop.
        session = self.web.session
        if session is None or session.closed:
            session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS))
            self.web.session = session
        return session

    def _api(self) -> AsyncWebClient:
        self._session()
        return self.web

    async def send(
        self, notice: Notice, target: str, posted: MessageRef | None
    ) -> MessageRef | None:
        web = self._api()
        if notice.closes:
            if posted is None:
                return None  # no message of ours asks for this proposal: nothing to close
            channel, ts = _where(posted)
            update = web.chat_update(
                channel=channel,
                ts=ts,
                text=notice.headline(),
                blocks=_blocks(notice, with_details=False),
            )
            return _ref(await _slack("chat.update", update))
        follows = posted is not None and notice.type in FOLLOW_UPS
        message = web.chat_postMessage(
            channel=target,
            text=notice.headline(),
            blocks=_blocks(notice),
            thread_ts=_where(posted)[1] if posted is not None and follows else None,
            unfurl_links=False,
            unfurl_media=False,
        )
        return _ref(await _slack("chat.postMessage", message))

    async def open_form(self, trigger_id: str, decision: str, proposal_id: str) -> None:
        """Open the modal that asks the text of a revise or answer decision. Raises
        `DeliveryFailed` (the trigger expired, Slack is down…)."""
        opening = self._api().views_open(
            trigger_id=trigger_id, view=_form_view(decision, proposal_id)
        )
        await _slack("views.open", opening)

    async def tell(self, response_url: str, text: str) -> None:
        """Show `text` to the user who clicked, and to them alone. The URL comes with the
        request, so only Slack's hosts (or the configured API's) are ever contacted."""
        if _origin(response_url) not in self._reply_origins:
            logger.warning("Slack reply not sent: %.200r is not a Slack response_url", response_url)
            return
        hook = AsyncWebhookClient(
            response_url, timeout=TIMEOUT_SECONDS, session=self._session(), retry_handlers=[]
        )
        try:
            answer = await hook.send(
                text=escape(text), response_type="ephemeral", replace_original=False
            )
        except NETWORK_ERRORS as exc:
            logger.warning("Slack reply not sent: %s: %s", type(exc).__name__, exc)
            return
        if answer.status_code != 200:
            logger.warning("Slack reply refused: %s %.200s", answer.status_code, answer.body)

    async def aclose(self) -> None:
        if self.web.session is not None:
            await self.web.session.close()
            self.web.session = None


async def _slack(method: str, call: Awaitable[AsyncSlackResponse]) -> AsyncSlackResponse:
    """Await a Web API call; its failures as `DeliveryFailed`, retryable or not."""
    try:
        return await call
    except SlackApiError as exc:
        response = exc.response
        status = response.status_code
        error = str(response.data.get("error", "")) if isinstance(response.data, dict) else ""
        transient = status == 429 or status >= 500 or error in TRANSIENT_ERRORS
        wait = seconds_to_wait(response.headers.get("Retry-After")) if transient else None
        said = (error or f"HTTP {status}") + (f" (retry after {wait:g} s)" if wait else "")
        raise DeliveryFailed(
            f"Slack {method}: {said}", permanent=not transient, retry_after=wait
        ) from exc
    except NETWORK_ERRORS as exc:
        raise DeliveryFailed(f"Slack {method}: {type(exc).__name__}: {exc}") from exc


def _where(posted: MessageRef) -> tuple[str, str]:
    channel, ts = posted.get("channel"), posted.get("ts")
    if not isinstance(channel, str) or not isinstance(ts, str):
        raise DeliveryFailed(f"not a Slack message: {posted!r}", permanent=True)
    return channel, ts


def _ref(response: AsyncSlackResponse) -> MessageRef:
    return {"channel": response["channel"], "ts": response["ts"]}


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of a plain http(s) URL; None for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return None
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


# -- Block Kit -------------------------------------------------------------------------------


def escape(text: str) -> str:
    """`text` shown as it is: Slack reads <…> as links and mentions, and an agent's title must
    never ping @channel."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text}


def _section(markdown: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": shorten(markdown, SECTION_LIMIT)}}


def _blocks(notice: Notice, *, with_details: bool = True) -> list[dict[str, Any]]:
    """The headline, the payload as code, the outcome, and a button per decision offered."""
    blocks = [_section(f"*{escape(notice.headline())}*")]
    details = notice.details() if with_details else ""
    if details:
        # A ``` inside would end the code block early; a zero-width space keeps it whole.
        code = escape(details).replace("```", "``\u200b`")
        blocks.append(_section(f"```{code}```"))
    if outcome := notice.outcome():
        blocks.append(_section(escape(outcome)))
    decisions = notice.decisions()
    if decisions and notice.proposal is not None:
        buttons = [_button(decision, notice.proposal.id) for decision in decisions]
        blocks.append({"type": "actions", "block_id": ACTIONS_BLOCK, "elements": buttons})
    return blocks


def _button(decision: str, proposal_id: str) -> dict[str, Any]:
    label, style = _BUTTONS[decision]
    button: dict[str, Any] = {
        "type": "button",
        "action_id": ACTION_PREFIX + decision,
        "value": proposal_id,
        "text": _plain(label),
    }
    if style is not None:
        button["style"] = style
    if decision == "reject":
        button["confirm"] = {
            "title": _plain("Reject this proposal?"),
            "text": _plain("The agent is told and tries another way."),
            "confirm": _plain("Reject"),
            "deny": _plain("Cancel"),
            "style": "danger",
        }
    return button


def _form_view(decision: str, proposal_id: str) -> dict[str, Any]:
    title, label = FORMS[decision]
    return {
        "type": "modal",
        "callback_id": FORM_CALLBACK,
        "title": _plain(title),
        "submit": _plain("Send"),
        "close": _plain("Cancel"),
        "private_metadata": json.dumps({"proposal_id": proposal_id, "decision": decision}),
        "blocks": [
            {
                "type": "input",
                "block_id": FORM_BLOCK,
                "label": _plain(label),
                "element": {
                    "type": "plain_text_input",
                    "action_id": FORM_INPUT,
                    "multiline": True,
                    "max_length": FORM_TEXT_LIMIT,
                },
            }
        ],
    }
