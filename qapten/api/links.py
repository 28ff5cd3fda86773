"""Signed one-click decision links: approve or reject one proposal, as one identity, until the
link expires, once.

A link is ``/links/TOKEN``; the token is itsdangerous's URL-safe, timestamped signature (keyed
by ``links_secret``) of ``[proposal id, identity, decision, nonce]``. Nothing else makes it
valid: changing any character breaks the signature, so a link for one proposal can never act on
another. Its age is read from the token itself (signed too), its nonce is recorded when it is
used (qapten.store.links), and its identity decides with the rights its token has at that moment
(`TokenBook.by_name`). The page behind it asks for a confirmation before deciding
(qapten.web.links): a chat app's link preview only reads it. The token is signed, not encrypted:
whoever holds the link can read the proposal id and the identity in it.

Raises `BadLink` for a token that was not signed with this secret (or is malformed) and
`ExpiredLink` for one older than its time to live; both are `LinkError`.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from pydantic import SecretStr

LinkDecision = Literal["approve", "reject"]
LINK_DECISIONS: tuple[LinkDecision, ...] = get_args(LinkDecision)
SALT = "qapten.link"  # keeps these signatures apart from any other use of the same secret
LINKS_PATH = "/links/"
"""Where the links' pages are (qapten.web.links): ``/links/TOKEN``."""
LINK_PAGE = "qapten_link"
"""The route name of a link's page (qapten.web.links), to build its URL with ``url_for``."""
TEAM_HINT = "team"
"""The query parameter of a link that names its team, for routing only (qapten.api.teams)."""
MAX_TOKEN = 1000
"""Longer tokens are refused before any decoding (`make`'s are near 150 characters)."""

Clock = Callable[[], float]


class LinkError(Exception):
    """A link that cannot be used: catch it to answer with a page, never a 500."""


class BadLink(LinkError):
    """The token was not made with this secret, was altered, or is not a link at all."""


class ExpiredLink(LinkError):
    """The token is genuine but older than the links' time to live."""


@dataclass(frozen=True)
class LinkClaim:
    """What a genuine, unexpired link says: who decides what on which proposal."""

    proposal_id: str
    who: str
    decision: LinkDecision
    nonce: str
    signed_at: datetime


class _ClockedSigner(TimestampSigner):
    """itsdangerous's timestamp signer reading the time from `clock`: tests sign in the past."""

    def __init__(self, *args: Any, clock: Clock, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clock = clock

    def get_timestamp(self) -> int:
        return int(self._clock())


class LinkSigner:
    def __init__(self, secret: str, *, clock: Clock = time.time) -> None:
        self._clock = clock
        self._serializer = URLSafeTimedSerializer(
            secret,
            salt=SALT,
            signer=_ClockedSigner,
            signer_kwargs={"clock": clock, "digest_method": hashlib.sha256},
        )

    @classmethod
    def of(cls, secret: SecretStr | None) -> LinkSigner | None:
        """The signer of the settings' ``links_secret``; None when links are off."""
        return None if secret is None else cls(secret.get_secret_value())

    def make(self, proposal_id: str, who: str, decision: LinkDecision) -> str:
        """A new link's token; each has a nonce of its own, so each is used once on its own."""
        if decision not in LINK_DECISIONS:
            msg = f"a link decides {' or '.join(LINK_DECISIONS)}, not {decision!r}"
            raise ValueError(msg)
        nonce = secrets.token_urlsafe(16)
        return str(self._serializer.dumps([proposal_id, who, decision, nonce]))

    def expires_at(self, max_age: int) -> datetime:
        """When a link made now expires (to the second, as its timestamp is)."""
        return datetime.fromtimestamp(int(self._clock()), UTC) + timedelta(seconds=max_age)

    def read(self, token: str, max_age: int) -> LinkClaim:
        """The claim of `token` if it is genuine and at most `max_age` seconds old."""
        if len(token) > MAX_TOKEN:
            raise BadLink("this link is not valid: it is far too long")
        try:
            payload, signed_at = self._serializer.loads(
                token, max_age=max_age, return_timestamp=True
            )
        except SignatureExpired as exc:
            raise ExpiredLink("this link has expired") from exc
        except BadSignature as exc:  # also a token that is not base64 or not JSON
            raise BadLink("this link is not valid: it may have been cut or altered") from exc
        match payload:
            case [str(proposal_id), str(who), "approve" | "reject" as decision, str(nonce)]:
                return LinkClaim(proposal_id, who, decision, nonce, signed_at)
        # Signed with this secret and salt but not by `make`: refused all the same.
        raise BadLink("this link is not valid: it says nothing Qapten can do")
