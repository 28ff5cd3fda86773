"""Signed JSON webhooks: each notice is POSTed to a receiver's URL, signed so that the
receiver can tell it comes from this Qapten and was not replayed.

The body is the notice as JSON (`Notice.as_json`). Headers:

- ``X-Qapten-Signature: t=TIMESTAMP,v1=HEX``: HEX is HMAC-SHA256, keyed with the webhook's
  secret, of ``TIMESTAMP`` (Unix seconds), a ``.``, and the raw body. A receiver recomputes it
  (`verify` does) and refuses a timestamp more than five minutes away from its clock.
- ``X-Qapten-Event``: the notice's type; ``X-Qapten-Delivery``: the event's id, the same on
  every retry, so that a receiver can drop a notice it already has.

A 2xx answer delivers the notice. Any other answer, or none, is tried again with backoff (by
the notifier), except a 4xx that a retry cannot change (400, 401, 403, 404, 410, 413, 422...):
that one fails at once. A WhatsApp, e-mail or pager bridge is a receiver like any other.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Sequence

import httpx

from qapten.channels.base import DeliveryFailed, MessageRef, seconds_to_wait
from qapten.channels.notices import Notice
from qapten.channels.settings import WebhookSettings

SIGNATURE_HEADER = "X-Qapten-Signature"
TOLERANCE_SECONDS = 300
RETRIED_STATUSES = frozenset({408, 409, 425, 429})
"""Client errors worth another try: the receiver was busy, not the request wrong."""


class BadSignature(Exception):
    """A webhook body whose signature does not verify (or is missing, or too old)."""


def sign(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    """The ``X-Qapten-Signature`` header's value for `body`."""
    at = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def verify(
    secret: str,
    body: bytes,
    header: str | None,
    *,
    tolerance: int = TOLERANCE_SECONDS,
    now: float | None = None,
) -> None:
    """Check a received webhook: raises `BadSignature` unless `header` signs `body` with
    `secret` and its timestamp is within `tolerance` seconds of `now`."""
    if not header:
        raise BadSignature(f"no {SIGNATURE_HEADER} header")
    parts = dict(part.partition("=")[::2] for part in header.split(","))
    try:
        at = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        raise BadSignature(f"{SIGNATURE_HEADER} is not t=TIMESTAMP,v1=HEX") from None
    if abs((time.time() if now is None else now) - at) > tolerance:
        raise BadSignature(f"the signature's timestamp is more than {tolerance} s away")
    expected = sign(secret, body, timestamp=at).partition("v1=")[2]
    if not hmac.compare_digest(expected, given):
        raise BadSignature("the signature does not match the body")


class WebhookChannel:
    """The configured webhooks; a destination ``webhook:NAME`` names one of them."""

    kind = "webhook"

    def __init__(
        self, hooks: Sequence[WebhookSettings], *, client: httpx.AsyncClient | None = None
    ) -> None:
        self._hooks = {hook.name: hook for hook in hooks}
        # Redirects are not followed: a receiver that moved must be configured anew, and a
        # signed notice is never handed on to wherever a redirect points.
        self._client = client or httpx.AsyncClient(follow_redirects=False)

    async def send(self, notice: Notice, target: str, posted: MessageRef | None) -> MessageRef:
        hook = self._hooks.get(target)
        if hook is None:
            raise DeliveryFailed(f"no webhook named {target!r}", permanent=True)
        body = json.dumps(notice.as_json(), ensure_ascii=False, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Qapten-Webhook/1",
            SIGNATURE_HEADER: sign(hook.secret.get_secret_value(), body),
            "X-Qapten-Event": notice.type,
            "X-Qapten-Delivery": str(notice.event.id),
        }
        try:
            response = await self._client.post(
                hook.url, content=body, headers=headers, timeout=hook.timeout_seconds
            )
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{hook.url}: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return {"status": status}
        permanent = 400 <= status < 500 and status not in RETRIED_STATUSES
        wait = seconds_to_wait(response.headers.get("Retry-After"))
        raise DeliveryFailed(f"{hook.url} answered {status}", permanent=permanent, retry_after=wait)

    async def aclose(self) -> None:
        await self._client.aclose()
