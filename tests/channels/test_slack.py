"""The Slack channel against a fake Slack served on loopback: notices become messages with
buttons, decisions turn them into outcomes, and signed clicks, forms and slash commands decide
as the mapped Qapten identity, through the same checks as the HTTP API."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from fastapi import FastAPI

from qapten import Swarm
from qapten.api import ApiSettings
from qapten.api.deps import ApiContext
from qapten.channels.base import DeliveryFailed, MessageRef
from qapten.channels.desk import ChatDesk
from qapten.channels.notices import Notice
from qapten.channels.settings import SlackSettings
from qapten.channels.slack import SlackChannel
from qapten.channels.slack_routes import slack_routes
from qapten.proposals import Proposal, ProposalStatus
from qapten.testing import ScriptedChatModel, ask, delegate, deliver, use
from tests.fakes.slack_api import BOT_TOKEN, FakeSlack, click, signed_request
from tests.servers import free_port

from ..api.conftest import TOKENS
from ..conftest import ORG, SwarmFactory

SIGNING_SECRET = "fake-signing-secret-0123456789"
CHANNEL = "C0QAPTEN"
USERS = {"UALICE": "alice", "UMARIA": "maria", "UVICTOR": "victor"}
"""alice is an admin, maria decides marketcom's proposals only, victor only views."""
MENTION = "<!channel>"
FORM_FIELD = {
    "type": "input",
    "block_id": "qapten:text",
    "element": {"type": "plain_text_input", "action_id": "qapten:text-input"},
}
"""The text field of a form, as the app makes it (for forms the app did not make)."""


def script() -> ScriptedChatModel:
    return ScriptedChatModel(
        {
            "ceo": [delegate(cto="Write the plan", marketcom="Ask about the tone"), deliver("ok")],
            "cto": [use("workspace.write_file", path="plan.md", content="v1"), deliver("done")],
            "marketcom": [ask(f"Which tone for {MENTION}?"), deliver("post drafted")],
        }
    )


def settings_for(api_url: str, **changes: Any) -> SlackSettings:
    values: dict[str, Any] = {
        "bot_token": BOT_TOKEN,
        "signing_secret": SIGNING_SECRET,
        "channel": CHANNEL,
        "users": USERS,
        "api_url": api_url,
    }
    return SlackSettings.model_validate({**values, **changes})


@dataclass
class Rig:
    swarm: Swarm
    fake: FakeSlack
    channel: SlackChannel
    client: httpx.AsyncClient
    """The app serving `slack_routes`: Slack's side of it."""

    async def post(
        self,
        path: str,
        fields: dict[str, str],
        *,
        secret: str = SIGNING_SECRET,
        at: int | None = None,
    ) -> httpx.Response:
        body = urlencode(fields).encode()
        headers = signed_request(secret, body, timestamp=at)
        return await self.client.post(path, content=body, headers=headers)

    async def interact(self, payload: dict[str, Any]) -> httpx.Response:
        return await self.post("/slack/actions", {"payload": json.dumps(payload)})

    async def click(self, user: str, decision: str, proposal_id: str) -> httpx.Response:
        answer = await self.interact(click(user, decision, proposal_id, self.fake.response_url()))
        assert answer.status_code == 200 and answer.content == b"", answer.text
        return answer

    async def command(self, user: str, command: str, text: str = "") -> str:
        fields = {"command": command, "text": text, "user_id": user, "team_id": "T0"}
        answer = await self.post("/slack/commands", fields)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["response_type"] == "ephemeral"
        text_shown: str = body["text"]
        return text_shown

    def replies(self) -> list[str]:
        for reply in self.fake.replies:
            assert reply["response_type"] == "ephemeral" and reply["replace_original"] is False
        return [reply["text"] for reply in self.fake.replies]


def submission(user: str, view: dict[str, Any], text: str) -> dict[str, Any]:
    """A ``view_submission`` payload: `view` (as the app opened it) sent with `text` typed."""
    [field] = view["blocks"]
    typed = {"type": "plain_text_input", "value": text}
    state = {"values": {field["block_id"]: {field["element"]["action_id"]: typed}}}
    return {"type": "view_submission", "user": {"id": user}, "view": {**view, "state": state}}


@pytest.fixture
async def rig(db: str) -> AsyncIterator[Rig]:
    fake = FakeSlack()
    async with fake.serve() as api_url, Swarm.from_yaml(ORG, model=script(), db=db) as swarm:
        settings = settings_for(api_url)
        channel = SlackChannel(settings)
        context = ApiContext.of(swarm, ApiSettings(tokens=tuple(TOKENS.values())))
        app = FastAPI()
        app.include_router(slack_routes(ChatDesk(context, "slack", USERS), settings, channel))
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://qapten") as client:
                yield Rig(swarm, fake, channel, client)
        finally:
            await channel.aclose()


async def the_plan(swarm: Swarm) -> Proposal:
    run = await swarm.start("Launch the product")
    [plan] = await swarm.pending(run.id)
    return plan


async def after_the_plan(swarm: Swarm, plan: Proposal | None = None) -> dict[str, Proposal]:
    """The plan approved: the cto's action and marketcom's question wait."""
    plan = plan or await the_plan(swarm)
    await swarm.decide(plan.id, "approve", by="alice")
    return {p.role: p for p in await swarm.pending(plan.run_id)}


async def notice(swarm: Swarm, event_type: str, proposal_id: str) -> Notice:
    """The notice of the proposal's `event_type` event, read from the store as it is now."""
    proposal = await swarm.proposal(proposal_id)
    [event] = [
        e
        for e in await swarm.events(proposal.run_id)
        if e.type == event_type and e.data.get("proposal_id") == proposal_id
    ]
    return Notice(event, await swarm.run(proposal.run_id), proposal)


async def status_of(swarm: Swarm, proposal_id: str) -> ProposalStatus:
    return (await swarm.proposal(proposal_id)).status


async def refusals(swarm: Swarm) -> list[dict[str, Any]]:
    return [e.data for e in await swarm.events() if e.type == "access.refused"]


def buttons_of(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [element for b in blocks if b["type"] == "actions" for element in b["elements"]]


def shown(blocks: list[dict[str, Any]]) -> str:
    return "\n".join(b["text"]["text"] for b in blocks if b["type"] == "section")


async def test_a_new_proposal_is_posted_with_a_button_per_decision(rig: Rig) -> None:
    plan = await the_plan(rig.swarm)
    created = await notice(rig.swarm, "proposal.created", plan.id)
    ref = await rig.channel.send(created, CHANNEL, None)

    [call] = rig.fake.calls_of("chat.postMessage")
    [(channel, ts)] = rig.fake.messages
    assert ref == {"channel": CHANNEL, "ts": ts} and channel == CHANNEL
    assert call["channel"] == CHANNEL and call["text"] == created.headline()
    assert "thread_ts" not in call
    text = shown(call["blocks"])
    assert created.headline() in text and '"to": "cto"' in text  # the plan itself, as code
    buttons = buttons_of(call["blocks"])
    assert [(b["action_id"], b["value"], b.get("style")) for b in buttons] == [
        ("qapten:approve", plan.id, "primary"),
        ("qapten:reject", plan.id, "danger"),
        ("qapten:revise", plan.id, None),
    ]
    assert buttons[1]["confirm"]["confirm"]["text"] == "Reject"

    # A question offers its own decisions; what an agent wrote never pings the channel.
    question = (await after_the_plan(rig.swarm, plan))["marketcom"]
    await rig.channel.send(await notice(rig.swarm, "proposal.created", question.id), CHANNEL, None)
    asked = rig.fake.calls_of("chat.postMessage")[-1]["blocks"]
    assert [b["action_id"] for b in buttons_of(asked)] == ["qapten:reject", "qapten:answer"]
    assert MENTION not in json.dumps(asked) and "&lt;!channel&gt;" in shown(asked)


async def test_a_decision_turns_the_message_into_its_outcome(rig: Rig) -> None:
    plan = await the_plan(rig.swarm)
    created = await notice(rig.swarm, "proposal.created", plan.id)
    ref = await rig.channel.send(created, CHANNEL, None)
    assert ref is not None

    # A reminder answers in the message's thread, with the buttons again.
    reminder = dataclasses.replace(created.event, type="proposal.reminder")
    await rig.channel.send(dataclasses.replace(created, event=reminder), CHANNEL, ref)
    reminded = rig.fake.calls_of("chat.postMessage")[-1]
    assert reminded["thread_ts"] == ref["ts"] and "Still waiting" in reminded["text"]
    assert len(buttons_of(reminded["blocks"])) == 3

    await rig.swarm.decide(plan.id, "approve", by="alice")
    closing = await notice(rig.swarm, "proposal.decided", plan.id)
    assert await rig.channel.send(closing, CHANNEL, None) is None  # nothing of ours to close
    assert rig.fake.calls_of("chat.update") == []

    assert await rig.channel.send(closing, CHANNEL, ref) == ref
    [update] = rig.fake.calls_of("chat.update")
    assert (update["channel"], update["ts"]) == (ref["channel"], ref["ts"])
    message = rig.fake.messages[CHANNEL, ref["ts"]]
    assert "✅ approved by alice" in shown(message["blocks"])
    assert buttons_of(message["blocks"]) == []


async def test_a_run_that_ends_is_posted(make_swarm: SwarmFactory) -> None:
    fake = FakeSlack()
    swarm = make_swarm({"ceo": [deliver("The product is launched")]})
    async with fake.serve() as api_url:
        channel = SlackChannel(settings_for(api_url))
        run = await swarm.start("Launch the product")
        [result] = await swarm.pending(run.id)
        await swarm.decide(result.id, "approve", by="alice")
        await swarm.wait(run.id, timeout=10)
        [done] = [e for e in await swarm.events(run.id) if e.type == "run.done"]
        ref = await channel.send(Notice(done, await swarm.run(run.id), None), CHANNEL, None)
        await channel.aclose()
    [call] = fake.calls_of("chat.postMessage")
    assert ref is not None and call["text"].startswith(f"🏁 Run {run.id} done")
    assert buttons_of(call["blocks"]) == []


async def test_a_signed_click_decides_as_the_mapped_identity_once(rig: Rig) -> None:
    plan = await the_plan(rig.swarm)

    await rig.click("UALICE", "approve", plan.id)
    decided = await rig.swarm.proposal(plan.id)
    assert (decided.status, decided.decided_by) == (ProposalStatus.APPROVED, "alice")
    assert rig.replies() == [f"✅ approved by alice: {plan.title}"]

    await rig.click("UALICE", "reject", plan.id)  # the stale button of the same message
    assert await status_of(rig.swarm, plan.id) is ProposalStatus.APPROVED
    assert rig.replies()[1].startswith("Already decided by alice (approved)")
    decisions = [e for e in await rig.swarm.events(plan.run_id) if e.type == "proposal.decided"]
    assert len(decisions) == 1


async def test_a_rejection_from_slack_says_so(rig: Rig) -> None:
    plan = await the_plan(rig.swarm)
    await rig.click("UALICE", "reject", plan.id)
    rejected = await rig.swarm.proposal(plan.id)
    assert (rejected.status, rejected.feedback) == (ProposalStatus.REJECTED, "rejected from Slack")
    assert rig.replies() == [f"❌ rejected by alice: rejected from Slack: {plan.title}"]


async def test_requests_not_signed_by_slack_are_refused_and_recorded(rig: Rig) -> None:
    plan = await the_plan(rig.swarm)
    body = urlencode({"payload": json.dumps(click("UALICE", "approve", plan.id, ""))}).encode()
    good = signed_request(SIGNING_SECRET, body)
    stale = signed_request(SIGNING_SECRET, body, timestamp=int(time.time()) - 6 * 60)
    forged = signed_request("someone-elses-secret-0123", body)
    no_number = {**good, "X-Slack-Request-Timestamp": "soon"}
    far_future = {**good, "X-Slack-Request-Timestamp": "9" * 400}
    unsigned = {"Content-Type": good["Content-Type"]}
    attempts = [stale, forged, no_number, far_future, unsigned]
    for path in ("/slack/actions", "/slack/commands"):
        for headers in attempts:
            answer = await rig.client.post(path, content=body, headers=headers)
            assert answer.status_code == 401 and answer.json()["code"] == "unauthorized"
    # A signature is for its body: the same headers over another body are refused too.
    other = body.replace(b"approve", b"reject")
    assert (await rig.client.post("/slack/actions", content=other, headers=good)).status_code == 401

    assert await status_of(rig.swarm, plan.id) is ProposalStatus.PENDING
    refused = await refusals(rig.swarm)
    assert len(refused) == 2 * len(attempts) + 1
    assert {(r["channel"], r["user"]) for r in refused} == {("slack", "unknown")}
    assert rig.fake.replies == [] and rig.fake.calls == []


async def test_slack_users_decide_only_what_their_identity_may(rig: Rig) -> None:
    plan = await the_plan(rig.swarm)

    await rig.click("USTRANGER", "approve", plan.id)  # not in `users`
    await rig.click("UMARIA", "approve", plan.id)  # maria decides marketcom's proposals only
    await rig.click("UVICTOR", "approve", plan.id)  # victor only views

    assert await status_of(rig.swarm, plan.id) is ProposalStatus.PENDING
    stranger, maria, victor = rig.replies()
    assert stranger == "slack user USTRANGER may not act here: nothing was done"
    assert maria == "maria (approver) may not decide ceo proposals"
    assert victor.startswith("victor (viewer) may not decide")
    assert [r["user"] for r in await refusals(rig.swarm)] == ["USTRANGER", "UMARIA", "UVICTOR"]


async def test_revise_asks_the_feedback_in_a_form_then_sends_back(rig: Rig) -> None:
    plan = await the_plan(rig.swarm)

    await rig.click("UALICE", "revise", plan.id)
    [opened] = rig.fake.calls_of("views.open")
    view = opened["view"]
    assert opened["trigger_id"] == "1337.42.trigger" and view["type"] == "modal"
    assert json.loads(view["private_metadata"]) == {"proposal_id": plan.id, "decision": "revise"}
    assert await status_of(rig.swarm, plan.id) is ProposalStatus.PENDING
    assert rig.replies() == []  # the form is the answer

    [field] = view["blocks"]
    empty = await rig.interact(submission("UALICE", view, "   "))
    assert empty.json() == {
        "response_action": "errors",
        "errors": {field["block_id"]: "Write something."},
    }
    assert await status_of(rig.swarm, plan.id) is ProposalStatus.PENDING

    sent = await rig.interact(submission("UALICE", view, "Cut the scope in half"))
    assert sent.json() == {"response_action": "clear"}
    revised = await rig.swarm.proposal(plan.id)
    assert (revised.status, revised.decided_by, revised.feedback) == (
        ProposalStatus.REVISION_REQUESTED,
        "alice",
        "Cut the scope in half",
    )

    again = (await rig.interact(submission("UALICE", view, "Again"))).json()
    assert again["response_action"] == "errors"
    assert again["errors"][field["block_id"]].startswith("Already decided by alice")


async def test_a_question_is_answered_in_a_form_by_its_role_approver(rig: Rig) -> None:
    question = (await after_the_plan(rig.swarm))["marketcom"]

    await rig.click("UMARIA", "answer", question.id)
    [opened] = rig.fake.calls_of("views.open")
    answered = await rig.interact(submission("UMARIA", opened["view"], "Friendly, not cute"))
    assert answered.json() == {"response_action": "clear"}
    done = await rig.swarm.proposal(question.id)
    assert (done.status, done.decided_by, done.feedback) == (
        ProposalStatus.ANSWERED,
        "maria",
        "Friendly, not cute",
    )


async def test_slash_commands(rig: Rig) -> None:
    plan = await the_plan(rig.swarm)

    inbox = await rig.command("UALICE", "/qapten", "inbox")
    assert inbox.startswith("1 waiting for you, newest first:") and plan.id in inbox
    assert "Commands:" in await rig.command("UALICE", "/qapten")
    refused = await rig.command("USTRANGER", "/qapten", f"approve {plan.id}")
    assert "may not act here" in refused
    assert await status_of(rig.swarm, plan.id) is ProposalStatus.PENDING

    approved = await rig.command("UALICE", "/approve", plan.id)  # a command of its own
    assert approved == f"✅ approved by alice: {plan.title}"
    assert (await rig.swarm.proposal(plan.id)).decided_by == "alice"
    assert (await rig.command("UALICE", "/qapten", f"approve {plan.id}")).startswith(
        "Already decided by alice"
    )


async def test_malformed_requests_get_400_and_decide_nothing(rig: Rig) -> None:
    plan = await the_plan(rig.swarm)
    url = rig.fake.response_url()
    a_click = click("UALICE", "approve", plan.id, url)
    payloads = [
        "not json",
        "[" * 100_000,
        json.dumps(["block_actions"]),
        json.dumps({**a_click, "user": None}),
        json.dumps({**a_click, "actions": []}),
        json.dumps({**a_click, "actions": [{"action_id": "qapten:explode", "value": plan.id}]}),
        json.dumps({**click("UALICE", "revise", plan.id, url), "trigger_id": ""}),
        json.dumps(
            submission(
                "UALICE",
                {"callback_id": "qapten:form", "private_metadata": "{}", "blocks": [FORM_FIELD]},
                "text",
            )
        ),
    ]
    for payload in payloads:
        answer = await rig.post("/slack/actions", {"payload": payload})
        assert answer.status_code == 400, (payload[:80], answer.text)
        assert answer.json()["code"] == "bad_request"
    assert (await rig.post("/slack/actions", {"no": "payload"})).status_code == 400
    assert (await rig.post("/slack/commands", {"text": "inbox"})).status_code == 400
    # An interaction of another type is none of ours, not an error.
    closed = await rig.interact({"type": "view_closed", "user": {"id": "UALICE"}})
    assert closed.status_code == 200

    assert await status_of(rig.swarm, plan.id) is ProposalStatus.PENDING
    assert rig.fake.calls == [] and rig.fake.replies == []


async def test_a_reply_goes_to_slack_only(rig: Rig) -> None:
    plan = await the_plan(rig.swarm)
    elsewhere = FakeSlack()
    async with elsewhere.serve():
        for url in (elsewhere.response_url(), "https://hooks.slack.com.evil.example/x"):
            await rig.interact(click("UALICE", "approve", plan.id, url))
    assert await status_of(rig.swarm, plan.id) is ProposalStatus.APPROVED  # signed: it counts
    assert elsewhere.replies == [] and elsewhere.calls == [] and rig.fake.replies == []


async def test_web_api_failures_are_retryable_or_permanent(rig: Rig) -> None:
    plan = await the_plan(rig.swarm)
    created = await notice(rig.swarm, "proposal.created", plan.id)
    cases: list[tuple[dict[str, Any], bool, str]] = [
        ({"error": "ratelimited", "status": 429, "retry_after": 3}, False, "retry after 3 s"),
        ({"error": None, "status": 502}, False, "HTTP 502"),
        ({"error": "internal_error"}, False, "internal_error"),
        ({"error": "channel_not_found"}, True, "channel_not_found"),
        ({"error": "not_in_channel"}, True, "not_in_channel"),
        ({"error": "msg_too_long"}, True, "msg_too_long"),
    ]
    for failure, permanent, said in cases:
        rig.fake.fail("chat.postMessage", **failure)
        with pytest.raises(DeliveryFailed) as caught:
            await rig.channel.send(created, CHANNEL, None)
        assert caught.value.permanent is permanent and said in str(caught.value), failure
    assert len(rig.fake.calls_of("chat.postMessage")) == len(cases)  # no hidden retries

    ref = await rig.channel.send(created, CHANNEL, None)  # Slack is back
    assert ref is not None and (CHANNEL, ref["ts"]) in rig.fake.messages

    await rig.swarm.decide(plan.id, "approve", by="alice")
    closing = await notice(rig.swarm, "proposal.decided", plan.id)
    gone: MessageRef = {"channel": CHANNEL, "ts": "1.000001"}
    with pytest.raises(DeliveryFailed) as caught:
        await rig.channel.send(closing, CHANNEL, gone)
    assert caught.value.permanent and "message_not_found" in str(caught.value)

    api_url = f"{rig.fake.base_url}/api/"
    for settings, permanent in (
        (settings_for(api_url, bot_token="xoxb-revoked"), True),  # invalid_auth
        (settings_for(f"http://127.0.0.1:{free_port()}/api/"), False),  # nobody listens
    ):
        other = SlackChannel(settings)
        with pytest.raises(DeliveryFailed) as caught:
            await other.send(created, CHANNEL, None)
        await other.aclose()
        assert caught.value.permanent is permanent, str(caught.value)
