"""The Telegram channel against a fake Bot API: notices post with buttons and close into their
outcome; taps, replies and commands from allowed users in allowed chats decide as their mapped
identity, everything else is refused and recorded; polling and the webhook take updates."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from qapten import Swarm
from qapten.api import ApiSettings
from qapten.api.deps import ApiContext
from qapten.channels.base import DeliveryFailed, MessageRef
from qapten.channels.desk import ChatDesk
from qapten.channels.notices import Notice
from qapten.channels.settings import TelegramSettings
from qapten.channels.telegram import TelegramChannel
from qapten.channels.telegram_updates import SECRET_HEADER, TelegramDesk, telegram_parts
from qapten.proposals import Answer, Approve, Proposal, ProposalStatus, Reject, Revise
from qapten.store.base import Event
from qapten.testing import ScriptedChatModel, ask, delegate, deliver, use
from tests.fakes.telegram_api import TOKEN, FakeTelegram
from tests.servers import free_port

from ..api.conftest import TOKENS
from ..conftest import SwarmFactory

CHAT, OTHER_CHAT = -1001001, -1002002
ALICE, MARIA, VICTOR, STRANGER = 1001, 1002, 1003, 1999
USERS = {ALICE: "alice", MARIA: "maria", VICTOR: "victor"}
WEBHOOK_SECRET = "telegram-webhook-secret-0123"


def script() -> ScriptedChatModel:
    return ScriptedChatModel(
        {
            "ceo": [delegate(cto="Write the plan", marketcom="Ask about the tone"), deliver("ok")],
            "cto": [use("workspace.write_file", path="plan.md", content="v1"), deliver("done")],
            "marketcom": [ask("Which tone?"), deliver("post drafted")],
        }
    )


def settings(api_url: str, **more: Any) -> TelegramSettings:
    return TelegramSettings(
        bot_token=TOKEN, chat_id=CHAT, users=USERS, api_url=api_url, poll_timeout_seconds=1, **more
    )


def chat_desk(swarm: Swarm) -> ChatDesk:
    context = ApiContext.of(swarm, ApiSettings(tokens=tuple(TOKENS.values())))
    return ChatDesk(context, "telegram", {str(user): name for user, name in USERS.items()})


@dataclass
class Rig:
    swarm: Swarm
    fake: FakeTelegram
    api_url: str
    channel: TelegramChannel


@pytest.fixture
async def swarm(make_swarm: SwarmFactory) -> Swarm:
    swarm = make_swarm(script())  # closed by make_swarm
    await swarm.open()
    return swarm


@asynccontextmanager
async def polling(swarm: Swarm, api_url: str) -> AsyncIterator[TelegramChannel]:
    """A channel on the fake at `api_url`, and its poller taking updates from CHAT (stopped,
    and the channel closed, at the end)."""
    channel = TelegramChannel(settings(api_url))
    updates = TelegramDesk(
        chat_desk(swarm), channel, {CHAT}, retry_seconds=0.02, max_retry_seconds=0.1
    )
    task = asyncio.create_task(updates.poll())
    try:
        yield channel
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await channel.aclose()


@pytest.fixture
async def rig(swarm: Swarm) -> AsyncIterator[Rig]:
    fake = FakeTelegram()
    async with fake.running() as api_url, polling(swarm, api_url) as channel:
        yield Rig(swarm, fake, api_url, channel)


async def notice(swarm: Swarm, event_type: str, proposal_id: str) -> Notice:
    """The notice of the latest `event_type` event of the proposal, read from the store."""
    proposal = await swarm.proposal(proposal_id)
    events = [
        e
        for e in await swarm.events(proposal.run_id)
        if e.type == event_type and e.data.get("proposal_id") == proposal_id
    ]
    return Notice(events[-1], await swarm.run(proposal.run_id), proposal)


async def waiting_plan(swarm: Swarm) -> Proposal:
    run = await swarm.start("Launch the product")
    [plan] = await swarm.pending(run.id)
    return plan


async def waiting_question(swarm: Swarm) -> Proposal:
    plan = await waiting_plan(swarm)
    await swarm.decide(plan.id, "approve", by="alice")
    pending = {p.role: p for p in await swarm.pending(plan.run_id)}
    return pending["marketcom"]


async def post(rig: Rig, proposal: Proposal, chat: int = CHAT) -> MessageRef:
    ref = await rig.channel.send(
        await notice(rig.swarm, "proposal.created", proposal.id), str(chat), None
    )
    assert ref is not None
    return ref


def shown(rig: Rig, ref: MessageRef) -> dict[str, Any]:
    """The message at `ref` as the chat shows it now."""
    return rig.fake.messages[(ref["chat_id"], ref["message_id"])]


def buttons(message: dict[str, Any]) -> list[str]:
    rows = message.get("reply_markup", {}).get("inline_keyboard", [])
    return [button["callback_data"] for row in rows for button in row]


async def tap(rig: Rig, user: int, ref: MessageRef, data: str) -> dict[str, Any]:
    """`user` taps the button `data` under the message at `ref`; the bot's answer."""
    answered = len(rig.fake.calls["answerCallbackQuery"])
    update = rig.fake.callback_update(user_id=user, message=shown(rig, ref), data=data)
    rig.fake.push_update(update)
    return (await rig.fake.called("answerCallbackQuery", answered + 1))[-1]


async def say(
    rig: Rig, user: int, text: str, *, chat: int = CHAT, reply_to: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`user` writes `text` in `chat`; the bot's answer (its next message there)."""
    sent = len(rig.fake.calls["sendMessage"])
    rig.fake.push_update(
        rig.fake.text_update(user_id=user, chat_id=chat, text=text, reply_to=reply_to)
    )
    await rig.fake.called("sendMessage", sent + 1)
    return rig.fake.sent(chat)[-1]


async def refusals(swarm: Swarm) -> list[Event]:
    return [e for e in await swarm.events() if e.type == "access.refused"]


async def status_of(swarm: Swarm, proposal_id: str) -> ProposalStatus:
    return (await swarm.proposal(proposal_id)).status


async def test_a_new_proposal_is_posted_in_plain_text_with_a_button_per_decision(rig: Rig) -> None:
    plan = await waiting_plan(rig.swarm)
    ref = await post(rig, plan)

    message = shown(rig, ref)
    assert ref == {"chat_id": CHAT, "message_id": message["message_id"]}
    assert message["from"]["id"] == rig.fake.bot_id
    assert message["text"].startswith(f"ceo · plan {plan.act}: {plan.title}")
    assert f"id: {plan.id}" in message["text"]
    assert buttons(message) == [f"approve:{plan.id}", f"reject:{plan.id}", f"revise:{plan.id}"]
    [call] = rig.fake.calls["sendMessage"]
    assert "parse_mode" not in call  # payload text can never break markup
    assert len(rig.fake.calls["getMe"]) == 1  # initialised once, before the first use


async def test_a_tap_decides_as_the_mapped_identity_and_the_closing_notice_drops_the_buttons(
    rig: Rig,
) -> None:
    plan = await waiting_plan(rig.swarm)
    ref = await post(rig, plan)

    answer = await tap(rig, ALICE, ref, f"approve:{plan.id}")
    assert answer["text"].startswith("✅ approved by alice") and not answer.get("show_alert")
    decided = await rig.swarm.proposal(plan.id)
    assert (decided.status, decided.decided_by) == (ProposalStatus.APPROVED, "alice")

    stale = await tap(rig, ALICE, ref, f"approve:{plan.id}")  # two taps, or two people
    assert stale["text"] == "Already decided by alice (approved): nothing was done."
    assert stale["show_alert"] is True

    closing = await notice(rig.swarm, "proposal.decided", plan.id)
    assert await rig.channel.send(closing, str(CHAT), ref) == ref
    message = shown(rig, ref)
    assert message["text"].startswith(f"ceo · plan {plan.act}: {plan.title}")
    assert "✅ approved by alice" in message["text"] and "reply_markup" not in message
    # A retried edit finds the message showing it already ("not modified"): delivered.
    assert await rig.channel.send(closing, str(CHAT), ref) == ref
    assert len(rig.fake.calls["editMessageText"]) == 2
    # A closing notice for a chat that never got the proposal has nothing to update.
    assert await rig.channel.send(closing, str(OTHER_CHAT), None) is None


async def test_a_reject_tap_rejects_and_a_reminder_answers_the_first_message(rig: Rig) -> None:
    plan = await waiting_plan(rig.swarm)
    ref = await post(rig, plan)
    await rig.swarm.store.add_event(plan.run_id, "proposal.reminder", {"proposal_id": plan.id})

    await rig.channel.send(await notice(rig.swarm, "proposal.reminder", plan.id), str(CHAT), ref)
    reminder = rig.fake.sent(CHAT)[-1]
    assert reminder["text"].startswith("⏰ Still waiting for a decision")
    assert reminder["reply_to_message"]["message_id"] == ref["message_id"]
    assert buttons(reminder) == buttons(shown(rig, ref))

    answer = await tap(rig, ALICE, ref, f"reject:{plan.id}")
    assert answer["text"].startswith("❌ rejected by alice")
    rejected = await rig.swarm.proposal(plan.id)
    assert (rejected.status, rejected.feedback) == (
        ProposalStatus.REJECTED,
        "rejected from Telegram",
    )


async def test_users_and_chats_not_allowed_are_refused_and_recorded(rig: Rig) -> None:
    plan = await waiting_plan(rig.swarm)
    ref = await post(rig, plan)

    stranger = await tap(rig, STRANGER, ref, f"approve:{plan.id}")
    assert stranger["show_alert"] is True and "may not act here" in stranger["text"]

    elsewhere = await post(rig, plan, chat=OTHER_CHAT)  # routed there, but not listened to
    from_other_chat = await tap(rig, ALICE, elsewhere, f"approve:{plan.id}")
    assert from_other_chat["show_alert"] is True
    assert f"no decisions from chat {OTHER_CHAT}" in from_other_chat["text"]

    command = await say(rig, ALICE, f"/approve {plan.id}", chat=OTHER_CHAT)
    assert f"This chat ({OTHER_CHAT}) may not command Qapten" in command["text"]

    forged = await tap(rig, ALICE, ref, "delete:everything")
    assert "not Qapten's" in forged["text"]

    assert await status_of(rig.swarm, plan.id) is ProposalStatus.PENDING
    refused = [(e.data["user"], e.data["who"]) for e in await refusals(rig.swarm)]
    assert refused == [(str(STRANGER), None), (str(ALICE), "alice"), (str(ALICE), "alice")]

    # Talk that is neither a command nor a reply to the bot is not Qapten's business.
    # Nor is a command for another bot of the group.
    for text in ("nice plan", "/help@OtherBot"):
        rig.fake.push_update(rig.fake.text_update(user_id=ALICE, chat_id=CHAT, text=text))
    await say(rig, ALICE, "/help@QaptenBot")
    helps = [m for m in rig.fake.sent(CHAT) if m["text"].startswith("Commands:")]
    assert len(helps) == 1
    assert len(await refusals(rig.swarm)) == 3


async def test_revise_asks_for_the_feedback_in_a_reply(rig: Rig) -> None:
    plan = await waiting_plan(rig.swarm)
    ref = await post(rig, plan)

    answer = await tap(rig, ALICE, ref, f"revise:{plan.id}")
    assert answer["text"] == "Reply to the bot's message with your text."
    prompt = rig.fake.sent(CHAT)[-1]
    assert prompt["text"] == f"🔁 What should change in proposal {plan.id}: reply to this message."
    assert prompt["reply_to_message"]["message_id"] == ref["message_id"]
    [*_, call] = rig.fake.calls["sendMessage"]
    assert call["reply_markup"]["force_reply"] is True

    # A look-alike of the prompt written by someone else decides nothing; nor does no text.
    lookalike = rig.fake.text_update(user_id=VICTOR, chat_id=CHAT, text=prompt["text"])
    rig.fake.push_update(lookalike)
    empty = await say(rig, ALICE, "", reply_to=prompt)
    assert empty["text"].startswith("Reply with some text")
    rig.fake.push_update(
        rig.fake.text_update(user_id=ALICE, chat_id=CHAT, text="x", reply_to=lookalike["message"])
    )

    reply = await say(rig, ALICE, "Cut the budget in half", reply_to=prompt)
    assert reply["text"].startswith("🔁 sent back for revision by alice: Cut the budget in half")
    revised = await rig.swarm.proposal(plan.id)
    assert (revised.status, revised.feedback, revised.decided_by) == (
        ProposalStatus.REVISION_REQUESTED,
        "Cut the budget in half",
        "alice",
    )


async def test_a_question_is_answered_in_a_reply_by_an_approver_of_its_role(rig: Rig) -> None:
    question = await waiting_question(rig.swarm)
    ref = await post(rig, question)
    assert buttons(shown(rig, ref)) == [f"reject:{question.id}", f"answer:{question.id}"]

    await tap(rig, MARIA, ref, f"answer:{question.id}")
    prompt = rig.fake.sent(CHAT)[-1]
    assert prompt["text"].startswith(f"💬 Your answer to proposal {question.id}")

    stranger_prompt = await tap(rig, STRANGER, ref, f"answer:{question.id}")
    assert "may not act here" in stranger_prompt["text"]  # no prompt for who cannot decide

    await say(rig, MARIA, "Friendly and short", reply_to=prompt)
    answered = await rig.swarm.proposal(question.id)
    assert (answered.status, answered.decided_by) == (ProposalStatus.ANSWERED, "maria")
    assert answered.feedback == "Friendly and short"


async def test_commands_run_with_the_rights_of_the_mapped_token(rig: Rig) -> None:
    plan = await waiting_plan(rig.swarm)

    inbox = await say(rig, ALICE, "/inbox")
    assert inbox["text"].startswith("1 waiting for you, newest first:") and plan.id in inbox["text"]
    assert inbox["reply_to_message"]["from"]["id"] == ALICE
    assert (await say(rig, VICTOR, "/inbox"))["text"] == "Nothing waits for you."

    viewer = await say(rig, VICTOR, "/mission Sell ice to penguins")
    assert viewer["text"] == "victor (viewer) may not start runs"
    assert len(await rig.swarm.runs()) == 1

    started = await say(rig, ALICE, "/mission Sell ice to penguins")
    assert started["text"].startswith("Run r_") and "Sell ice to penguins" in started["text"]
    [new_run] = [run for run in await rig.swarm.runs() if run.id != plan.run_id]
    assert new_run.mission == "Sell ice to penguins"
    requested = [e for e in await rig.swarm.events(new_run.id) if e.type == "run.requested"]
    assert requested[0].data == {"by": "alice", "channel": "telegram"}

    approved = await say(rig, ALICE, f"/approve@QaptenBot {plan.id}")
    assert approved["text"].startswith("✅ approved by alice")
    assert await status_of(rig.swarm, plan.id) is ProposalStatus.APPROVED


async def test_a_run_end_is_posted_without_buttons(rig: Rig) -> None:
    plan = await waiting_plan(rig.swarm)
    while pending := await rig.swarm.pending(plan.run_id):
        for proposal in pending:
            decision = Answer(text="Warm") if proposal.kind.value == "question" else Approve()
            await rig.swarm.decide(proposal.id, decision, by="alice")
    done = await rig.swarm.wait(plan.run_id, timeout=10)
    [event] = [e for e in await rig.swarm.events(plan.run_id) if e.type == "run.done"]

    ref = await rig.channel.send(Notice(event, done, None), str(CHAT), None)
    assert ref is not None
    message = shown(rig, ref)
    assert message["text"].startswith(f"🏁 Run {plan.run_id} done: Launch the product")
    assert "reply_markup" not in message


async def test_the_desk_maps_a_button_or_command_to_its_decision(swarm: Swarm) -> None:
    desk = chat_desk(swarm)
    assert desk.decision("approve", "") == Approve()
    assert desk.decision("reject", "") == Reject(feedback="rejected from Telegram")
    assert desk.decision("reject", "Too soon") == Reject(feedback="Too soon")
    assert desk.decision("revise", "Shorter") == Revise(feedback="Shorter")
    assert desk.decision("answer", "Friendly") == Answer(text="Friendly")
    with pytest.raises(ValueError, match="'edit' is not a decision"):
        desk.decision("edit", "{}")


async def test_polling_outlives_failures_and_confirms_what_it_handled(swarm: Swarm) -> None:
    fake = FakeTelegram()
    fake.fail_next("getMe", status=502)  # Telegram away at start
    fake.fail_next("getUpdates", 2, status=500)
    fake.webhook = {"url": "https://elsewhere", "secret": None}  # 409 until it is deleted
    async with fake.running() as api_url:
        async with polling(swarm, api_url) as channel:
            rig = Rig(swarm, fake, api_url, channel)
            plan = await waiting_plan(swarm)
            ref = await post(rig, plan)
            tap = fake.callback_update(
                user_id=ALICE, message=shown(rig, ref), data=f"approve:{plan.id}"
            )
            update_id = fake.push_update(tap)
            await fake.called("getUpdates", 4)
            assert not fake.calls["answerCallbackQuery"]  # the webhook still holds the updates
            fake.webhook = None
            await fake.called("answerCallbackQuery")
            assert await status_of(swarm, plan.id) is ProposalStatus.APPROVED
            await fake.called("getUpdates", len(fake.calls["getUpdates"]) + 1)  # past it
        *polls, confirmation = fake.calls["getUpdates"]
        assert {tuple(call["allowed_updates"]) for call in polls} == {("message", "callback_query")}
        assert confirmation["offset"] == update_id + 1
        assert fake.queued == []  # confirmed on the way out: a restart does not see it again


async def test_webhook_mode_takes_updates_with_the_secret_only(swarm: Swarm) -> None:
    fake = FakeTelegram()
    async with fake.running() as api_url:
        polled = telegram_parts(chat_desk(swarm), settings(api_url), {CHAT})
        assert polled.routes is None and polled.poll is not None
        await polled.channel.aclose()

        hooked = settings(api_url, webhook_secret=WEBHOOK_SECRET)
        parts = telegram_parts(chat_desk(swarm), hooked, {CHAT})
        assert parts.routes is not None and parts.poll is None
        app = FastAPI()
        app.include_router(parts.routes)
        transport = httpx.ASGITransport(app=app)
        async with (
            contextlib.aclosing(parts.channel),
            httpx.AsyncClient(transport=transport, base_url="http://qapten") as client,
        ):
            plan = await waiting_plan(swarm)
            ref = await post(Rig(swarm, fake, api_url, parts.channel), plan)
            message = fake.messages[(CHAT, ref["message_id"])]
            update = fake.callback_update(user_id=ALICE, message=message, data=f"approve:{plan.id}")
            update["update_id"] = 1

            for headers in ({}, {SECRET_HEADER: "wrong-secret"}):
                refused = await client.post("/telegram/updates", json=update, headers=headers)
                assert refused.status_code == 401, refused.text
                assert refused.json()["code"] == "unauthorized"
            assert await status_of(swarm, plan.id) is ProposalStatus.PENDING
            assert [e.data["path"] for e in await refusals(swarm)] == ["/telegram/updates"] * 2

            right = {SECRET_HEADER: WEBHOOK_SECRET}
            for body in (b"not json", b"[]", b'{"update_id": 2, "message": "x"}'):
                bad = await client.post("/telegram/updates", content=body, headers=right)
                assert bad.status_code == 400, bad.text

            taken = await client.post("/telegram/updates", json=update, headers=right)
            assert taken.status_code == 200
        decided = await swarm.proposal(plan.id)
        assert (decided.status, decided.decided_by) == (ProposalStatus.APPROVED, "alice")
        [answer] = fake.calls["answerCallbackQuery"]
        assert answer["text"].startswith("✅ approved by alice")
        assert "/telegram/updates" not in app.openapi()["paths"]


async def test_send_failures_are_retryable_or_permanent(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # python-telegram-bot 22 warns, making a RetryAfter, that its `retry_after` is to become a
    # timedelta; opting in to that now keeps the warning (an error here) away.
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    plan = await waiting_plan(rig.swarm)
    created = await notice(rig.swarm, "proposal.created", plan.id)
    cases = [
        (429, 7, False, "Telegram asks to wait 7 s"),
        (500, None, False, "Internal Server Error"),
        (502, None, False, "Bad Gateway"),
        (400, None, True, "Bad Request"),
        (403, None, True, "blocked by the user"),
    ]
    for status, retry_after, permanent, said in cases:
        rig.fake.fail_next("sendMessage", status=status, retry_after=retry_after)
        with pytest.raises(DeliveryFailed) as failed:
            await rig.channel.send(created, str(CHAT), None)
        assert (failed.value.permanent, said in str(failed.value)) == (permanent, True), status
    assert await rig.channel.send(created, str(CHAT), None) is not None  # the next one goes

    with pytest.raises(DeliveryFailed) as not_a_chat:
        await rig.channel.send(created, "general", None)
    assert not_a_chat.value.permanent and "not a Telegram chat id" in str(not_a_chat.value)

    wrong = TelegramSettings(
        bot_token="42:nope", chat_id=CHAT, api_url=rig.api_url, poll_timeout_seconds=1
    )
    async with contextlib.aclosing(TelegramChannel(wrong)) as wrong_token:
        with pytest.raises(DeliveryFailed) as refused:
            await wrong_token.send(created, str(CHAT), None)
    assert refused.value.permanent and "bot_token" in str(refused.value)
    assert "42:nope" not in str(refused.value)  # python-telegram-bot's message names it

    closed_port = f"http://127.0.0.1:{free_port()}/bot"
    async with contextlib.aclosing(TelegramChannel(settings(closed_port))) as away:
        with pytest.raises(DeliveryFailed) as unreachable:
            await away.send(created, str(CHAT), None)
    assert not unreachable.value.permanent and TOKEN not in str(unreachable.value)
