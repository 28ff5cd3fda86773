"""Slack's requests (qapten.channels.slack says how to set the app up): the buttons and forms
of the bot's messages at ``POST /slack/actions`` and the slash commands at
``POST /slack/commands``, each checked for Slack's signature, then decided or run by the chat
desk as the Qapten identity the Slack user is mapped to."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl

from fastapi import APIRouter, BackgroundTasks, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from slack_sdk.signature import SignatureVerifier

from qapten.api.errors import ApiError, QaptenRoute
from qapten.channels.base import DeliveryFailed
from qapten.channels.desk import HELP, ChatDesk, Reply
from qapten.channels.settings import SlackSettings
from qapten.channels.slack import (
    ACTION_PREFIX,
    FORM_BLOCK,
    FORM_INPUT,
    FORMS,
    SlackChannel,
    escape,
)

__all__ = ["slack_routes"]

logger = logging.getLogger(__name__)

UMBRELLA_COMMAND = "/qapten"
MAX_FORM_FIELDS = 100


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _User(_Part):
    id: str = Field(min_length=1, max_length=100)


class _Action(_Part):
    action_id: Literal["qapten:approve", "qapten:reject", "qapten:revise", "qapten:answer"]
    value: str = Field(min_length=1, max_length=200)


class _Click(_Part):
    """A ``block_actions`` payload: a button of one of our messages was clicked."""

    user: _User
    actions: list[_Action] = Field(min_length=1)
    trigger_id: str = ""
    response_url: str = ""


class _Form(_Part):
    """What a modal carries in its private_metadata: the decision it asks the text of."""

    proposal_id: str = Field(min_length=1, max_length=200)
    decision: Literal["revise", "answer"]


class _Input(_Part):
    value: str | None = None


class _View(_Part):
    callback_id: Literal["qapten:form"]
    private_metadata: str
    state: dict[str, dict[str, dict[str, _Input]]]
    """``{"values": {block_id: {action_id: input}}}``."""


class _Submission(_Part):
    """A ``view_submission`` payload: one of our modals was sent."""

    user: _User
    view: _View


PartT = TypeVar("PartT", bound=_Part)


def _parse(model: type[PartT], data: object) -> PartT:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        msg = f"not a Slack payload we take: {where}: {problem['msg']}"
        raise ApiError(400, "bad_request", msg) from None


def _signed(verifier: SignatureVerifier, body: bytes, headers: Mapping[str, str]) -> bool:
    try:
        return verifier.is_valid(
            body, headers.get("X-Slack-Request-Timestamp"), headers.get("X-Slack-Signature")
        )
    # A timestamp that is no number (or too large to compare), a body or signature not text.
    except (ValueError, TypeError, ArithmeticError):
        return False


def _command_line(command: str, text: str) -> str:
    """``/qapten approve ID`` → ``/approve ID``; ``/approve ID`` as it is."""
    text = text.strip()
    if command.lower() == UMBRELLA_COMMAND:
        return "/" + (text.lstrip("/") or "help")
    return f"{command} {text}"


def slack_routes(desk: ChatDesk, settings: SlackSettings, channel: SlackChannel) -> APIRouter:
    """``POST /slack/actions`` (buttons and modals) and ``POST /slack/commands`` (slash
    commands), taken from Slack only, as the Qapten identities `settings.users` names."""
    verifier = SignatureVerifier(settings.signing_secret.get_secret_value())
    routes = APIRouter(prefix="/slack", include_in_schema=False, route_class=QaptenRoute)

    async def signed_form(request: Request) -> dict[str, str]:
        body = await request.body()
        if not _signed(verifier, body, request.headers):
            reason = f"{request.url.path}: not signed by Slack (or more than 5 minutes ago)"
            await desk.refuse("unknown", reason)
            raise ApiError(401, "unauthorized", "This request does not carry Slack's signature.")
        try:
            fields = parse_qsl(
                body.decode(), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
            )
        except ValueError:  # not UTF-8, or too many fields
            raise ApiError(400, "bad_request", "The body is not a Slack form.") from None
        return dict(fields)

    @routes.post("/actions")
    async def actions(request: Request, background: BackgroundTasks) -> Response:
        form = await signed_form(request)
        try:
            payload = json.loads(form["payload"])
        except (KeyError, ValueError, RecursionError):
            raise ApiError(400, "bad_request", "The form has no JSON payload.") from None
        kind = payload.get("type") if isinstance(payload, dict) else None
        if not isinstance(kind, str):
            raise ApiError(400, "bad_request", "The payload is not a Slack interaction.")
        if kind == "block_actions":
            click = _parse(_Click, payload)
            name = click.actions[0].action_id.removeprefix(ACTION_PREFIX)
            if name in FORMS and not click.trigger_id:
                raise ApiError(400, "bad_request", "A click that opens a form needs trigger_id.")
            # Slack waits three seconds for the acknowledgement; the outcome follows it.
            background.add_task(take_click, click)
            return Response(status_code=200)
        if kind == "view_submission":
            return JSONResponse(await take_form(_parse(_Submission, payload)))
        return Response(status_code=200)  # other interactions (a modal closed…): nothing to do

    async def take_click(click: _Click) -> None:
        action = click.actions[0]
        name, proposal_id = action.action_id.removeprefix(ACTION_PREFIX), action.value
        try:
            if name in FORMS:
                await channel.open_form(click.trigger_id, name, proposal_id)
                return  # the form's submission decides
            reply = await desk.decide(click.user.id, proposal_id, desk.decision(name, ""))
        except DeliveryFailed as exc:
            usage = f"{UMBRELLA_COMMAND} {name} {proposal_id} …"
            reply = Reply(f"The form did not open ({exc}); write {usage} instead.", ok=False)
        # The click was acknowledged already: nobody else would tell the user it failed.
        except Exception:
            logger.exception("a Slack click on proposal %s failed", proposal_id)
            reply = Reply("Qapten failed to take this click; its log says why.", ok=False)
        if click.response_url:
            await channel.tell(click.response_url, reply.text)

    async def take_form(submission: _Submission) -> dict[str, Any]:
        view = submission.view
        try:
            form = _Form.model_validate_json(view.private_metadata)
        except ValidationError:
            raise ApiError(400, "bad_request", "The form's private_metadata is not ours.") from None
        typed = view.state.get("values", {}).get(FORM_BLOCK, {}).get(FORM_INPUT)
        text = (typed.value or "").strip() if typed is not None else ""
        if not text:
            return {"response_action": "errors", "errors": {FORM_BLOCK: "Write something."}}
        decision = desk.decision(form.decision, text)
        reply = await desk.decide(submission.user.id, form.proposal_id, decision)
        if not reply.ok:
            return {"response_action": "errors", "errors": {FORM_BLOCK: reply.text}}
        return {"response_action": "clear"}

    @routes.post("/commands")
    async def commands(request: Request) -> JSONResponse:
        form = await signed_form(request)
        user_id, command = form.get("user_id", ""), form.get("command", "")
        if not user_id or not command.startswith("/"):
            raise ApiError(400, "bad_request", "A slash command needs command and user_id.")
        reply = await desk.command(user_id, _command_line(command, form.get("text", "")))
        text = HELP if reply is None else reply.text
        return JSONResponse({"response_type": "ephemeral", "text": escape(text)})

    return routes
