"""A small synchronous client of a running Qapten server, for scripts and the CLI.

`qapten inbox` and `qapten decide` are built on it; a script can drive a whole run with it::

    with QaptenClient("http://127.0.0.1:8000", token) as client:
        run = client.start("Launch the coaching app")
        while not (run := client.run(run.id)).finished:
            for proposal in client.pending(run.id, oldest_first=True):
                client.decide(proposal.id, "approve")
            time.sleep(0.2)  # the run advances on the server meanwhile
        print(run.result, run.tokens)

Each method is one endpoint of the HTTP API (``/api/v1``); the answers are read into the views
below, which name every field the API sends and keep any field they do not name.

Every failure is a `ClientError` with a one-line message and the exit code the CLI uses:
2 for a mistake of the caller (bad token, unknown id, invalid decision or mission), 1 otherwise
(server unreachable, already decided, run not retryable, server error).
"""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

API_PREFIX = "/api/v1"
PAGE_SIZE = 500
USER_MISTAKE, FAILURE = 2, 1
FINISHED = frozenset({"done", "failed", "cancelled"})
"""The statuses a run does not leave, unless a failed one is retried."""

# These views are the API's schemas (`qapten.api.schemas`) read from the client's side, not
# imports of them: importing `qapten.api` loads FastAPI and the server, which a client does not
# need; and a view keeps the fields it does not name (extra="allow"), so a newer server does not
# break an older client. tests/test_client.py checks that they name every field the API sends.


class _View(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class ProposalView(_View):
    """A proposal as the server returns it (`ProposalPublic`)."""

    id: str
    run_id: str
    # Required: what `qapten inbox` and `decide` show, as before this view named every field.
    # The rest have defaults, so that an answer with only those (a fake server's) still reads.
    task_id: str = ""
    role: str
    kind: str
    """plan, action, deliverable, question or budget."""
    act: str = ""
    """What the agent wants to do: ``delegate``, ``deliver``, ``ask_human`` or a tool's name."""
    title: str
    payload: dict[str, Any] = Field(default_factory=dict)
    """The act's arguments, as proposed."""
    payload_hash: str = ""
    status: str
    """pending, approved, edited, rejected, revision_requested, answered, expired, cancelled."""
    created_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    feedback: str | None = None
    decided_payload: dict[str, Any] | None = None
    """The payload a human's edit put in place of `payload`."""
    expires_at: datetime | None = None
    """When it expires (or escalates) if nobody decides it; None: it waits."""
    escalated_to: str | None = None
    """Past a deadline: the role whose deciders now decide it, or ``@admins``."""
    quorum: dict[str, Any] | None = None
    """For an act that needs M of N named approvers: ``{"required", "approvers"}``."""
    approvals: list[dict[str, Any]] = Field(default_factory=list)
    """The approvals so far, ``{"by", "at"}``, each approver once."""


class RunView(_View):
    """A run as the server returns it (`RunPublic`)."""

    id: str
    org: str
    mission: str
    status: str
    """running, waiting (for a human), done, failed or cancelled."""
    result: str | None = None
    """The root task's deliverable, once done."""
    error: str | None = None
    """Why it failed or who cancelled it."""
    created_at: datetime
    updated_at: datetime

    @property
    def finished(self) -> bool:
        """Done, failed or cancelled: it will not move unless someone retries it."""
        return self.status in FINISHED


class TaskView(_View):
    """One task of a run's task tree (`TaskPublic`)."""

    id: str
    parent: str | None
    role: str
    brief: str
    status: str
    steps: int
    revisions: int
    children: list[str]
    proposal: str | None
    result: str | None
    error: str | None


class RunDetailView(RunView):
    """A run with what `GET /runs/{id}` adds (`RunDetail`)."""

    tasks: list[TaskView]
    """The task tree, in creation order (the root first)."""
    tokens: dict[str, int]
    """Tokens spent by each role in this run."""
    proposals: list[ProposalView]
    """Every proposal of the run, oldest first."""


V = TypeVar("V", bound=BaseModel)


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

    # -- runs -------------------------------------------------------------------------------------

    def start(self, mission: str) -> RunView:
        """Start a run on `mission`; it advances on the server while this returns at once."""
        return self._view(RunView, self._request("POST", "/runs", json={"mission": mission}))

    def run(self, run_id: str) -> RunDetailView:
        """The run now: its status and result, task tree, proposals and tokens per role."""
        return self._view(RunDetailView, self._request("GET", _path("/runs", run_id)))

    def runs(self, status: str | None = None) -> list[RunView]:
        """Every run (or those with `status`), newest first, as the API lists them (all pages)."""
        return self._all_pages(RunView, "/runs", {} if status is None else {"status": status})

    def cancel(self, run_id: str) -> RunView:
        """Cancel a run: its pending proposals are cancelled and no further step starts.

        A finished run is returned as it is.
        """
        return self._view(RunView, self._request("POST", _path("/runs", run_id, "cancel")))

    def retry(self, run_id: str) -> RunView:
        """Take a failed run up again where it stopped; returns it ``running``.

        A run that is not failed raises `ClientError` (409, exit code 1).
        """
        return self._view(RunView, self._request("POST", _path("/runs", run_id, "retry")))

    # -- proposals --------------------------------------------------------------------------------

    def pending(
        self, run_id: str | None = None, *, oldest_first: bool = False
    ) -> list[ProposalView]:
        """Every proposal waiting for a human (of the run `run_id`, or of all runs; all pages).

        Newest first, as the API and ``qapten inbox`` list them; with `oldest_first`, in the
        order they were made, as `Swarm.pending` returns them (the order to work through them).
        """
        params = (
            {"status": "pending"} if run_id is None else {"status": "pending", "run_id": run_id}
        )
        found = self._all_pages(ProposalView, "/proposals", params)
        # The API orders by (created_at, id), newest first: the reverse is exactly oldest first.
        return found[::-1] if oldest_first else found

    def proposal(self, proposal_id: str) -> ProposalView:
        return self._view(ProposalView, self._request("GET", _path("/proposals", proposal_id)))

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
        path = _path("/proposals", proposal_id, "decision")
        return self._view(ProposalView, self._request("POST", path, json=body))

    # -- HTTP -------------------------------------------------------------------------------------

    def _all_pages(self, view: type[V], path: str, params: dict[str, str]) -> list[V]:
        found: list[V] = []
        query: dict[str, str | int] = {**params, "limit": PAGE_SIZE}
        while True:
            page = self._request("GET", path, params=query)
            if not isinstance(page, dict) or not isinstance(page.get("items"), list):
                raise ClientError(f"{self.url} does not look like a Qapten server")
            found += [self._view(view, item) for item in page["items"]]
            if not page.get("next_cursor"):
                return found
            query["cursor"] = page["next_cursor"]

    def _view(self, view: type[V], data: Any) -> V:
        try:
            return view.model_validate(data)
        except ValidationError:
            what = view.__name__.removesuffix("View").removesuffix("Detail").lower()
            msg = f"{self.url} answered with something that is not a {what}"
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
            case 409 if body["code"] == "already_decided":
                details = body.get("details") or {}
                return AlreadyDecided(
                    str(details.get("status", "decided")), details.get("decided_by")
                )
            case 409:  # e.g. not_retryable: the run is not in a state for that
                return ClientError(message)
            case 400 | 403 | 404 | 422:
                return ClientError(message, exit_code=USER_MISTAKE)
        return ClientError(f"server error (HTTP {status}): {message}")


def _path(collection: str, item_id: str, *action: str) -> str:
    """``/runs/ID[/action]`` with the id escaped: an id never reaches another route."""
    return "/".join((collection, quote(item_id, safe=""), *action))
