"""A small client of a running Qapten server: list the pending proposals, decide one.

`qapten inbox` and `qapten decide` are built on it; scripts may use it too::

    with QaptenClient("http://127.0.0.1:8000", token) as client:
        for proposal in client.pending():
            client.decide(proposal.id, "approve")

Every failure is a `ClientError` with a one-line message and the exit code the CLI uses:
2 for a mistake of the caller (bad token, unknown id, invalid decision), 1 otherwise (server
unreachable, already decided, server error).
"""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

API_PREFIX = "/api/v1"
PAGE_SIZE = 500
USER_MISTAKE, FAILURE = 2, 1


class ProposalView(BaseModel):
    """A proposal as the server returns it; fields this client does not name are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: str
    run_id: str
    role: str
    kind: str
    title: str
    status: str
    created_at: datetime
    decided_by: str | None = None


class ClientError(Exception):
    """What went wrong, in one line, and the exit code for it."""

    def __init__(self, message: str, *, exit_code: int = FAILURE) -> None:
        super().__init__(message)
        self.message, self.exit_code = message, exit_code


class AlreadyDecided(ClientError):
    """Someone decided first (409): `status` and `decided_by` say how and who."""

    def __init__(self, status: str, decided_by: str | None) -> None:
        who = f" by {decided_by}" if decided_by else ""
        super().__init__(f"already {status.replace('_', ' ')}{who}", exit_code=FAILURE)
        self.status, self.decided_by = status, decided_by


class QaptenClient:
    """Synchronous; use as a context manager, or call `close`."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        if token and not (token.isascii() and token.isprintable()):
            msg = "the token has characters no Qapten token has: check QAPTEN_TOKEN"
            raise ClientError(msg, exit_code=USER_MISTAKE)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            self._http = httpx.Client(
                base_url=self.url + API_PREFIX,
                headers=headers,
                timeout=timeout,
                transport=transport,
            )
        except httpx.InvalidURL as exc:
            msg = f"invalid server URL {url!r}: {exc}"
            raise ClientError(msg, exit_code=USER_MISTAKE) from None
        self._has_token = bool(token)

    def __enter__(self) -> QaptenClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def pending(self) -> list[ProposalView]:
        """Every proposal waiting for a human, newest first (all pages)."""
        found: list[ProposalView] = []
        params: dict[str, str | int] = {"status": "pending", "limit": PAGE_SIZE}
        while True:
            page = self._request("GET", "/proposals", params=params)
            if not isinstance(page, dict) or not isinstance(page.get("items"), list):
                raise ClientError(f"{self.url} does not look like a Qapten server")
            found += [self._proposal(item) for item in page["items"]]
            if not page.get("next_cursor"):
                return found
            params["cursor"] = page["next_cursor"]

    def decide(
        self,
        proposal_id: str,
        decision: str,
        *,
        feedback: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> ProposalView:
        """Record a decision; returns the decided proposal. Raises `AlreadyDecided` on 409."""
        body: dict[str, Any] = {"decision": decision}
        if feedback is not None:
            body["feedback"] = feedback
        if payload is not None:
            body["payload"] = payload
        path = f"/proposals/{quote(proposal_id, safe='')}/decision"
        return self._proposal(self._request("POST", path, json=body))

    def _proposal(self, data: Any) -> ProposalView:
        try:
            return ProposalView.model_validate(data)
        except ValidationError:
            msg = f"{self.url} answered with something that is not a proposal"
            raise ClientError(msg) from None

    def _request(self, method: str, path: str, **options: Any) -> Any:
        try:
            response = self._http.request(method, path, **options)
        except httpx.UnsupportedProtocol:
            msg = f"invalid server URL {self.url!r}: use http://HOST:PORT"
            raise ClientError(msg, exit_code=USER_MISTAKE) from None
        except httpx.ConnectError:
            msg = f"cannot connect to {self.url}: is 'qapten serve' running there? (see --url)"
            raise ClientError(msg) from None
        except httpx.TimeoutException:
            raise ClientError(f"{self.url} did not answer in time") from None
        except httpx.TransportError as exc:
            raise ClientError(f"cannot reach {self.url}: {exc}") from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.is_success and data is not None:
            return data
        raise self._error(response.status_code, data if isinstance(data, dict) else {})

    def _error(self, status: int, body: dict[str, Any]) -> ClientError:
        if status == 401 and not self._has_token:
            msg = (
                "no token: set QAPTEN_TOKEN (a new server prints one and keeps it in the file "
                "admin-token of its data directory)"
            )
            return ClientError(msg, exit_code=USER_MISTAKE)
        if "code" not in body:  # every Qapten error has one; this is some other server
            msg = f"{self.url} does not look like a Qapten server (HTTP {status})"
            return ClientError(msg)
        message = str(body.get("message") or f"HTTP {status}")
        match status:
            case 401:
                msg = f"the server refused the token ({message}): check QAPTEN_TOKEN"
                return ClientError(msg, exit_code=USER_MISTAKE)
            case 409:
                details = body.get("details") or {}
                return AlreadyDecided(
                    str(details.get("status", "decided")), details.get("decided_by")
                )
            case 403 | 404 | 422:
                return ClientError(message, exit_code=USER_MISTAKE)
        return ClientError(f"server error (HTTP {status}): {message}")
