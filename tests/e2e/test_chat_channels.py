"""One decision, every channel: a real ``qapten serve`` process notifies a fake Slack, a fake
Telegram Bot API and a webhook receiver (all on 127.0.0.1) of a proposal; it is decided from
Telegram; the Slack and Telegram messages then show the outcome without buttons and the
webhook hears of it. A forged Slack signature and a Telegram user not allowed decide nothing;
a stale Slack button says who decided."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
import pytest
import yaml

from qapten.api.settings import token_digest
from tests.fakes import serving
from tests.fakes.slack_api import BOT_TOKEN, FakeSlack, click, signed_request
from tests.fakes.telegram_api import TOKEN as TELEGRAM_TOKEN
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.test_cli_serve import serving as served_cli

pytestmark = pytest.mark.slow

ADMIN = "chat-e2e-admin-token"
HEADERS = {"Authorization": f"Bearer {ADMIN}"}
SIGNING_SECRET = "e2e-slack-signing-secret-0123"
HOOK_SECRET = "e2e-webhook-secret-0123456789"
SLACK_CHANNEL, SLACK_ALICE = "C0OPS", "U0ALICE"
CHAT, TELEGRAM_ALICE, STRANGER = -1001, 111, 999
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
T = TypeVar("T")


@dataclass
class Deployment:
    url: str
    slack: FakeSlack
    telegram: FakeTelegram
    webhook: WebhookReceiver
    http: httpx.AsyncClient
    log: Path
    """The server's output."""

    async def pending(self) -> list[dict[str, Any]]:
        found = await self.http.get(f"{self.url}/api/v1/proposals", params={"status": "pending"})
        assert found.status_code == 200, found.text
        items: list[dict[str, Any]] = found.json()["items"]
        return items

    async def proposal(self, proposal_id: str) -> dict[str, Any]:
        found = await self.http.get(f"{self.url}/api/v1/proposals/{proposal_id}")
        assert found.status_code == 200, found.text
        body: dict[str, Any] = found.json()
        return body


async def soon(check: Callable[[], Awaitable[T | None]], what: str, within: float = 15) -> T:
    """`check()`'s first truthy result, looked for every 50 ms for `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        await asyncio.sleep(0.05)


def settings_file(path: Path, slack_api: str, telegram_api: str, hook_url: str) -> Path:
    settings = {
        "tokens": [{"name": "alice", "sha256": token_digest(ADMIN), "scope": "admin"}],
        "event_poll_seconds": 0.05,
        "channels": {
            "slack": {
                "bot_token": BOT_TOKEN,
                "signing_secret": SIGNING_SECRET,
                "channel": SLACK_CHANNEL,
                "users": {SLACK_ALICE: "alice"},
                "api_url": slack_api,
            },
            "telegram": {
                "bot_token": TELEGRAM_TOKEN,
                "chat_id": CHAT,
                "users": {TELEGRAM_ALICE: "alice"},
                "api_url": telegram_api,
                "poll_timeout_seconds": 1,
            },
            "webhooks": [{"name": "ops", "url": hook_url, "secret": HOOK_SECRET}],
            "retry_seconds": 0.2,
        },
    }
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path


@pytest.fixture
async def deployment(tmp_path: Path) -> AsyncIterator[Deployment]:
    slack, telegram, webhook = FakeSlack(), FakeTelegram(), WebhookReceiver()
    async with (
        slack.serve() as slack_api,
        telegram.running() as telegram_api,
        serving(webhook.app()) as hook_base,
        httpx.AsyncClient(headers=HEADERS, timeout=10) as http,
    ):
        hook = f"{hook_base}/ops"
        settings = settings_file(tmp_path / "settings.yaml", slack_api, telegram_api, hook)
        server = served_cli(tmp_path, tmp_path / "data", "--settings", str(settings))
        with ExitStack() as stack:
            # Started from a thread: waiting for it must not stop this loop, which serves the
            # fakes that the server talks to as it starts.
            started = await asyncio.to_thread(stack.enter_context, server)
            try:
                yield Deployment(started.url, slack, telegram, webhook, http, started.log)
            finally:
                await asyncio.to_thread(stack.pop_all().close)


async def test_one_decision_from_telegram_closes_the_proposal_everywhere(
    deployment: Deployment,
) -> None:
    d = deployment
    said = d.log.read_text(encoding="utf-8")
    assert f"notifying webhook:ops, slack:{SLACK_CHANNEL}, telegram:{CHAT}" in said
    started = await d.http.post(f"{d.url}/api/v1/runs", json={"mission": "Launch"})
    assert started.status_code == 201, started.text
    [plan] = await soon(d.pending, "the plan waits")
    plan_id = plan["id"]

    # Posted to each channel, with its decisions.
    async def slack_post() -> dict[str, Any] | None:
        posts = d.slack.calls_of("chat.postMessage")
        return posts[0] if posts else None

    posted = await soon(slack_post, "the plan is posted to Slack")
    assert posted["channel"] == SLACK_CHANNEL and plan["title"] in posted["text"]
    [slack_message] = list(d.slack.messages)  # (channel, ts)

    async def telegram_post() -> dict[str, Any] | None:
        sent = d.telegram.sent(CHAT)
        return sent[0] if sent else None

    message = await soon(telegram_post, "the plan is posted to Telegram")
    buttons = [
        b["callback_data"] for row in message["reply_markup"]["inline_keyboard"] for b in row
    ]
    assert f"approve:{plan_id}" in buttons

    async def hooked(kind: str) -> list[dict[str, Any]]:
        return [r.json() for r in d.webhook.at("/ops") if r.json()["type"] == kind]

    [created] = await soon(lambda: hooked("proposal.created"), "the webhook hears of the plan")
    assert created["proposal"]["id"] == plan_id

    # A forged Slack click decides nothing.
    body = urlencode(
        {"payload": json.dumps(click(SLACK_ALICE, "approve", plan_id, d.slack.response_url()))}
    ).encode()
    forged = await d.http.post(
        f"{d.url}/slack/actions",
        content=body,
        headers={**signed_request("not-the-signing-secret", body), **FORM},
    )
    assert forged.status_code == 401
    # Neither does a tap from a Telegram user not in the allowed list.
    d.telegram.push_update(
        d.telegram.callback_update(user_id=STRANGER, message=message, data=f"approve:{plan_id}")
    )
    [refused] = await d.telegram.called("answerCallbackQuery", within=15)
    assert "may not" in refused["text"]
    assert (await d.proposal(plan_id))["status"] == "pending"

    # Alice's tap in Telegram decides.
    d.telegram.push_update(
        d.telegram.callback_update(
            user_id=TELEGRAM_ALICE, message=message, data=f"approve:{plan_id}"
        )
    )

    async def decided() -> dict[str, Any] | None:
        found = await d.proposal(plan_id)
        return found if found["status"] == "approved" else None

    assert (await soon(decided, "the tap approves the plan"))["decided_by"] == "alice"

    # Every channel's message now shows the outcome, without buttons.
    async def slack_updated() -> dict[str, Any] | None:
        updates = d.slack.calls_of("chat.update")
        return updates[-1] if updates else None

    update = await soon(slack_updated, "the Slack message is updated")
    assert (update["channel"], update["ts"]) == slack_message
    blocks = d.slack.messages[slack_message]["blocks"]
    assert isinstance(blocks, list) and blocks
    assert "approved by alice" in json.dumps(blocks)
    assert [b["type"] for b in blocks if b["type"] == "actions"] == []

    async def telegram_edited() -> dict[str, Any] | None:
        edited = d.telegram.sent(CHAT)[0]
        return edited if "approved by alice" in edited["text"] else None

    edited = await soon(telegram_edited, "the Telegram message is edited")
    assert "reply_markup" not in edited or not edited["reply_markup"].get("inline_keyboard")
    [closed] = await soon(lambda: hooked("proposal.decided"), "the webhook hears the decision")
    assert closed["proposal"]["decided_by"] == "alice"

    # A stale Slack button says who decided, and changes nothing.
    stale = click(SLACK_ALICE, "approve", plan_id, d.slack.response_url("stale"))
    body = urlencode({"payload": json.dumps(stale)}).encode()
    clicked = await d.http.post(
        f"{d.url}/slack/actions",
        content=body,
        headers={**signed_request(SIGNING_SECRET, body), **FORM},
    )
    assert clicked.status_code == 200

    async def told() -> list[dict[str, Any]]:
        return [r for r in d.slack.replies if r.get("key") == "stale"]

    [reply] = await soon(told, "the stale click is answered")
    assert reply["text"].startswith("Already decided by alice")

    # The delivery log has each notice, delivered, at each destination.
    log = (await d.http.get(f"{d.url}/api/v1/deliveries", params={"proposal_id": plan_id})).json()
    seen = {(row["destination"], row["event_type"], row["status"]) for row in log["items"]}
    for destination in (f"slack:{SLACK_CHANNEL}", f"telegram:{CHAT}", "webhook:ops"):
        for kind in ("proposal.created", "proposal.decided"):
            assert (destination, kind, "delivered") in seen
