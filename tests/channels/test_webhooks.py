"""Signed webhooks and the notifier behind every channel: signatures verify, a failing receiver
is retried with backoff and the delivery log shows each try, notices follow the routes, and
nothing is lost or sent twice across restarts and side-by-side notifiers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from qapten import Swarm
from qapten.api import ApiSettings, create_app
from qapten.channels.notifier import Notifier
from qapten.channels.settings import ChannelSettings
from qapten.channels.webhook import SIGNATURE_HEADER, BadSignature, WebhookChannel, sign, verify
from qapten.proposals import ProposalStatus
from qapten.store.deliveries import Delivery
from qapten.testing import ScriptedChatModel, ask, delegate, deliver, use
from tests.fakes import serving
from tests.fakes.webhook_receiver import WebhookReceiver

from ..api.conftest import TOKENS, auth
from ..conftest import SwarmFactory, write_org
from ..test_deadlines import FakeClock, cto_writes, pending_action, with_deadline

SECRET = "w" * 32
OTHER_SECRET = "x" * 32


def script() -> ScriptedChatModel:
    return ScriptedChatModel(
        {
            "ceo": [delegate(cto="Write the plan", marketcom="Ask about the tone"), deliver("ok")],
            "cto": [use("workspace.write_file", path="plan.md", content="v1"), deliver("done")],
            "marketcom": [ask("Which tone?"), deliver("post drafted")],
        }
    )


@pytest.fixture
async def swarm(make_swarm: SwarmFactory) -> Swarm:
    swarm = make_swarm(script())
    await swarm.open()
    return swarm


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[WebhookReceiver, str]]:
    fake = WebhookReceiver()
    async with serving(fake.app()) as url:
        yield fake, url


def hooks(url: str, *names: str, links_for: str | None = None, **extra: Any) -> ChannelSettings:
    webhooks = [
        {"name": n, "url": f"{url}/{n}", "secret": SECRET, "links_for": links_for} for n in names
    ]
    return ChannelSettings.model_validate({"webhooks": webhooks, "retry_seconds": 0.05, **extra})


MakeNotifier = Callable[[Swarm, ChannelSettings], Notifier]


@pytest.fixture
async def notifier() -> AsyncIterator[MakeNotifier]:
    """Notifiers over webhooks; their connections are closed at the end."""
    made: list[Notifier] = []

    def make(swarm: Swarm, settings: ChannelSettings) -> Notifier:
        channel = WebhookChannel(settings.webhooks)
        made.append(Notifier(swarm.store, settings, {"webhook": channel}))
        return made[-1]

    yield make
    for each in made:
        for channel in each.channels.values():
            await channel.aclose()


async def settle(
    notifiers: list[Notifier], done: Callable[[list[Delivery]], bool], swarm: Swarm
) -> list[Delivery]:
    """Run passes of `notifiers` until `done(the delivery log)`; at most 10 s."""
    deadline = time.monotonic() + 10
    while True:
        for each in notifiers:
            await each.step()
        log = await swarm.store.deliveries(limit=500)
        if done(log):
            return log
        assert time.monotonic() < deadline, f"not settled in 10 s: {log}"
        await asyncio.sleep(0.02)


def all_settled(log: list[Delivery]) -> bool:
    return bool(log) and all(d.status != "pending" for d in log)


async def plan_waiting(swarm: Swarm) -> str:
    run = await swarm.start("Launch")
    [plan] = await swarm.pending(run.id)
    return plan.id


# -- signatures ---------------------------------------------------------------------------------


def test_a_signature_verifies_only_for_its_body_secret_and_time() -> None:
    body = b'{"type":"proposal.created"}'
    header = sign(SECRET, body)
    verify(SECRET, body, header)  # does not raise
    for bad_body, secret, when in (
        (body + b" ", SECRET, None),
        (body, OTHER_SECRET, None),
        (body, SECRET, time.time() + 301),
    ):
        with pytest.raises(BadSignature):
            verify(secret, bad_body, header, now=when)
    for malformed in (None, "", "v1=abc", "t=soon,v1=abc", "t=1"):
        with pytest.raises(BadSignature):
            verify(SECRET, body, malformed)


# -- delivery, retries and the log --------------------------------------------------------------


async def test_a_failing_receiver_is_retried_and_the_log_shows_each_try(
    swarm: Swarm, notifier: MakeNotifier, receiver: tuple[WebhookReceiver, str]
) -> None:
    fake, url = receiver
    fake.answer_next([500, 503])
    sender = notifier(swarm, hooks(url, "ops"))
    await swarm.store.start_cursor("qapten.notifier")  # as the server does when it starts
    plan_id = await plan_waiting(swarm)

    [delivery] = await settle([sender], all_settled, swarm)
    assert (delivery.status, delivery.attempts) == ("delivered", 3)
    assert delivery.last_error is not None and "answered 503" in delivery.last_error
    assert (delivery.event_type, delivery.proposal_id) == ("proposal.created", plan_id)

    tries = fake.at("/ops")
    assert len(tries) == 3
    assert {t.headers["x-qapten-delivery"] for t in tries} == {str(delivery.event_id)}
    for each in tries:
        verify(SECRET, each.body, each.headers[SIGNATURE_HEADER.lower()])
    body = tries[-1].json()
    assert body["type"] == "proposal.created" and body["proposal"]["id"] == plan_id
    assert body["proposal"]["status"] == "pending" and body["run"]["mission"] == "Launch"
    # Backoff: 0.05 s before the first retry, then twice that (retry_seconds doubling).
    first_wait, second_wait = tries[1].at - tries[0].at, tries[2].at - tries[1].at
    assert first_wait >= 0.05 and second_wait >= 0.1


async def test_a_receiver_that_refuses_for_good_fails_at_once_with_an_event(
    swarm: Swarm, notifier: MakeNotifier, receiver: tuple[WebhookReceiver, str]
) -> None:
    fake, url = receiver
    fake.answer_next([404])
    sender = notifier(swarm, hooks(url, "ops"))
    await swarm.store.start_cursor("qapten.notifier")
    await plan_waiting(swarm)

    [delivery] = await settle([sender], all_settled, swarm)
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    [failed] = [e for e in await swarm.events() if e.type == "notice.failed"]
    assert failed.data["destination"] == "webhook:ops" and "404" in failed.data["error"]


async def test_retries_stop_at_max_attempts(
    swarm: Swarm, notifier: MakeNotifier, receiver: tuple[WebhookReceiver, str]
) -> None:
    fake, url = receiver
    fake.answer_next([500] * 10)
    sender = notifier(swarm, hooks(url, "ops", max_attempts=3))
    await swarm.store.start_cursor("qapten.notifier")
    await plan_waiting(swarm)

    [delivery] = await settle([sender], all_settled, swarm)
    assert (delivery.status, delivery.attempts) == ("failed", 3)
    assert len(fake.at("/ops")) == 3


async def test_a_receiver_that_asks_to_wait_is_not_tried_sooner(
    swarm: Swarm, notifier: MakeNotifier, receiver: tuple[WebhookReceiver, str]
) -> None:
    fake, url = receiver
    fake.answer_next([429])
    fake.retry_after = "30"
    sender = notifier(swarm, hooks(url, "ops"))  # its own backoff would wait 0.05 s
    await swarm.store.start_cursor("qapten.notifier")
    await plan_waiting(swarm)
    assert await sender.step() == (1, 1)
    [delivery] = await swarm.store.deliveries()
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    waits = (delivery.next_attempt_at - swarm.store.clock()).total_seconds()
    assert 25 < waits <= 30
    assert await sender.step() == (0, 0)  # not due yet
    assert len(fake.at("/ops")) == 1


async def test_an_unreachable_receiver_is_retried_like_a_failing_one(
    swarm: Swarm, notifier: MakeNotifier
) -> None:
    from tests.servers import free_port

    closed = f"http://127.0.0.1:{free_port()}"
    sender = notifier(swarm, hooks(closed, "ops", max_attempts=2))
    await swarm.store.start_cursor("qapten.notifier")
    await plan_waiting(swarm)
    [delivery] = await settle([sender], all_settled, swarm)
    assert (delivery.status, delivery.attempts) == ("failed", 2)
    assert delivery.last_error is not None and "ConnectError" in delivery.last_error


# -- routes, links, decisions -------------------------------------------------------------------


async def test_notices_follow_the_routes_and_a_decision_is_notified(
    swarm: Swarm, notifier: MakeNotifier, receiver: tuple[WebhookReceiver, str]
) -> None:
    fake, url = receiver
    routes = [{"role": "marketcom", "to": ["webhook:marketing"]}, {"to": ["webhook:ops"]}]
    sender = notifier(swarm, hooks(url, "ops", "marketing", routes=routes))
    await swarm.store.start_cursor("qapten.notifier")
    plan_id = await plan_waiting(swarm)
    await swarm.decide(plan_id, "approve", by="alice")
    run_id = (await swarm.proposal(plan_id)).run_id
    waiting = {p.role: p for p in await swarm.pending(run_id)}
    assert set(waiting) == {"cto", "marketcom"}

    await settle([sender], lambda log: len(log) == 4 and all_settled(log), swarm)
    ops = [r.json() for r in fake.at("/ops")]
    marketing = [r.json() for r in fake.at("/marketing")]
    assert [(b["type"], b["proposal"]["role"]) for b in ops] == [
        ("proposal.created", "ceo"),
        ("proposal.decided", "ceo"),
        ("proposal.created", "cto"),
    ]
    assert (
        ops[1]["proposal"]["status"] == "approved" and ops[1]["proposal"]["decided_by"] == "alice"
    )
    assert ops[1]["text"] == ops[0]["text"]  # the same proposal, now decided
    assert [(b["type"], b["proposal"]["kind"]) for b in marketing] == [
        ("proposal.created", "question")
    ]


async def test_a_reminder_and_an_expiry_are_notified_after_the_proposal(
    make_swarm: SwarmFactory,
    notifier: MakeNotifier,
    receiver: tuple[WebhookReceiver, str],
    tmp_path: Path,
) -> None:
    fake, url = receiver
    clock = FakeClock()
    org = write_org(tmp_path, with_deadline({"expires_after": "30m", "remind_before": "10m"}))
    swarm = make_swarm(cto_writes(), org=org, clock=clock, sweep_interval=None)
    await swarm.open()
    sender = notifier(swarm, hooks(url, "ops"))
    await swarm.store.start_cursor("qapten.notifier")
    action = await pending_action(swarm)
    for minutes in (20, 10):  # the reminder, then the deadline
        clock.advance(timedelta(minutes=minutes))
        await swarm.expire_due()

    def about_it(log: list[Delivery]) -> list[Delivery]:
        return [d for d in log if d.proposal_id == action.id]  # the run goes on meanwhile

    await settle(
        [sender], lambda log: len(about_it(log)) == 3 and all_settled(about_it(log)), swarm
    )
    notices = [r.json() for r in fake.at("/ops")]
    created, reminded, expired = [n for n in notices if n["type"].startswith("proposal.")]
    assert [created["type"], reminded["type"], expired["type"]] == [
        "proposal.created",
        "proposal.reminder",
        "proposal.expired",
    ]
    assert {n["proposal"]["id"] for n in (created, reminded, expired)} == {action.id}
    assert reminded["text"].startswith("⏰ Still waiting for a decision")
    assert expired["proposal"]["status"] == "expired"


async def test_cancelling_a_run_closes_its_proposals_notices(
    swarm: Swarm, notifier: MakeNotifier, receiver: tuple[WebhookReceiver, str]
) -> None:
    fake, url = receiver
    sender = notifier(swarm, hooks(url, "ops"))
    await swarm.store.start_cursor("qapten.notifier")
    plan_id = await plan_waiting(swarm)
    await swarm.cancel((await swarm.proposal(plan_id)).run_id, by="alice")

    await settle([sender], lambda log: len(log) == 2 and all_settled(log), swarm)
    created, cancelled = (r.json() for r in fake.at("/ops"))
    assert created["type"] == "proposal.created"
    assert cancelled["type"] == "proposal.cancelled" and cancelled["data"]["by"] == "alice"
    assert cancelled["proposal"]["status"] == "cancelled"
    assert cancelled["text"] == created["text"]


async def test_a_notice_carries_links_that_decide_once_as_their_identity(
    swarm: Swarm, receiver: tuple[WebhookReceiver, str]
) -> None:
    fake, url = receiver
    public = "https://qapten.example.com"
    settings = ApiSettings(
        tokens=tuple(TOKENS.values()),
        links_secret="s" * 40,
        public_url=public,
        channels=hooks(url, "ops", links_for="alice"),
    )
    app = create_app(swarm, settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=public) as client,
    ):
        plan_id = await plan_waiting(swarm)
        deadline = time.monotonic() + 10
        while not fake.at("/ops"):  # the app's own notifier delivers it
            assert time.monotonic() < deadline, "no notice in 10 s"
            await asyncio.sleep(0.02)
        links = fake.at("/ops")[0].json()["links"]
        assert set(links) == {"approve", "reject"}
        assert all(link.startswith(f"{public}/links/") for link in links.values())

        page = await client.get(links["approve"])  # a preview: shows, decides nothing
        assert page.status_code == 200
        assert (await swarm.proposal(plan_id)).status is ProposalStatus.PENDING
        done = await client.post(links["approve"])
        assert done.status_code == 200
        decided = await swarm.proposal(plan_id)
        assert (decided.status, decided.decided_by) == (ProposalStatus.APPROVED, "alice")
        assert (await client.post(links["approve"])).status_code == 409
        assert (await client.post(links["reject"])).status_code == 409  # decided already


async def test_the_delivery_log_is_for_admins_a_page_at_a_time(
    swarm: Swarm, receiver: tuple[WebhookReceiver, str]
) -> None:
    fake, url = receiver
    fake.answer_next([500])
    settings = ApiSettings(tokens=tuple(TOKENS.values()), channels=hooks(url, "ops", "audit"))
    app = create_app(swarm, settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://q") as client,
    ):
        plan_id = await plan_waiting(swarm)
        log = await settle([], lambda log: len(log) == 2 and all_settled(log), swarm)
        assert sorted(d.attempts for d in log) == [1, 2]  # one of the two was retried

        first = await client.get("/api/v1/deliveries?limit=1", headers=auth("admin-token"))
        assert first.status_code == 200, first.text
        [newest] = first.json()["items"]
        cursor = first.json()["next_cursor"]
        second = await client.get(
            "/api/v1/deliveries", params={"limit": 1, "cursor": cursor}, headers=auth("admin-token")
        )
        [older] = second.json()["items"]
        assert second.json()["next_cursor"] is None
        assert newest["id"] > older["id"]
        assert {newest["destination"], older["destination"]} == {"webhook:ops", "webhook:audit"}
        for row in (newest, older):
            assert (row["status"], row["proposal_id"], row["event_type"]) == (
                "delivered",
                plan_id,
                "proposal.created",
            )
        retried = [row for row in (newest, older) if row["attempts"] == 2]
        assert retried and "answered 500" in retried[0]["last_error"]

        filtered = await client.get(
            "/api/v1/deliveries",
            params={"destination": "webhook:audit", "status": "delivered"},
            headers=auth("admin-token"),
        )
        assert [row["destination"] for row in filtered.json()["items"]] == ["webhook:audit"]
        refused = await client.get("/api/v1/deliveries", headers=auth("mc-token"))
        assert refused.status_code == 403
        bad = await client.get("/api/v1/deliveries?cursor=nonsense", headers=auth("admin-token"))
        assert bad.status_code == 422


# -- durability ---------------------------------------------------------------------------------


async def test_a_new_notifier_goes_on_where_the_last_stopped_and_two_never_send_twice(
    swarm: Swarm, notifier: MakeNotifier, receiver: tuple[WebhookReceiver, str]
) -> None:
    fake, url = receiver
    settings = hooks(url, "ops")
    first = notifier(swarm, settings)
    await swarm.store.start_cursor("qapten.notifier")
    plan_id = await plan_waiting(swarm)
    await settle([first], all_settled, swarm)
    assert len(fake.at("/ops")) == 1

    # The first notifier is gone (its process died); events go on meanwhile.
    await swarm.decide(plan_id, "approve", by="alice")
    run_id = (await swarm.proposal(plan_id)).run_id
    await swarm.pending(run_id)  # the next proposals are out
    replicas = [notifier(swarm, settings), notifier(swarm, settings)]
    log = await settle(replicas, lambda log: len(log) == 4 and all_settled(log), swarm)

    sent = [r.headers["x-qapten-delivery"] for r in fake.at("/ops")]
    assert len(sent) == len(set(sent)) == 4  # each notice once, none lost
    assert all(d.attempts == 1 for d in log)


async def test_a_notifier_starting_on_an_old_database_skips_its_history(
    swarm: Swarm, notifier: MakeNotifier, receiver: tuple[WebhookReceiver, str]
) -> None:
    fake, url = receiver
    await plan_waiting(swarm)  # before any notifier ever ran
    sender = notifier(swarm, hooks(url, "ops"))
    await swarm.store.start_cursor("qapten.notifier")
    assert await sender.step() == (0, 0)
    assert fake.received == []
