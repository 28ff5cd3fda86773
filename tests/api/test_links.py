"""Signed one-click decision links, in-process: a link works once, for its proposal only, as its
identity only, and not after expiry; its page never decides on a GET."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from markupsafe import escape
from pydantic import ValidationError

from qapten import Swarm
from qapten.api import ApiSettings, create_app
from qapten.api.auth import TokenBook
from qapten.api.deciding import Forbidden, decide_as
from qapten.api.links import BadLink, ExpiredLink, LinkSigner
from qapten.proposals import Approve, Proposal, ProposalStatus
from qapten.storage import engine_url
from qapten.store import Store
from qapten.testing import ScriptedChatModel, ask, delegate, deliver, use

from ..conftest import ORG
from .conftest import TOKENS, auth

ADMIN, VIEWER, MARKETCOM = auth("admin-token"), auth("viewer-token"), auth("mc-token")
SECRET = "s" * 40
TTL = 3600
MARKUP = "<script>alert('x')</script>"


def script() -> ScriptedChatModel:
    return ScriptedChatModel(
        {
            "ceo": [delegate(cto="Write the plan", marketcom="Ask about the tone"), deliver("ok")],
            "cto": [use("workspace.write_file", path="plan.md", content=MARKUP), deliver("done")],
            "marketcom": [ask("Which tone?"), deliver("post drafted")],
        }
    )


@pytest.fixture
async def swarm(db: str) -> AsyncIterator[Swarm]:
    swarm = Swarm.from_yaml(ORG, model=script(), db=db)
    await swarm.open()
    yield swarm
    await swarm.close()


@pytest.fixture
async def client(swarm: Swarm) -> AsyncIterator[httpx.AsyncClient]:
    settings = ApiSettings(
        tokens=tuple(TOKENS.values()), links_secret=SECRET, links_ttl_seconds=TTL
    )
    transport = httpx.ASGITransport(app=create_app(swarm, settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://qapten") as client:
        yield client


async def pending_by_role(client: httpx.AsyncClient, swarm: Swarm) -> dict[str, Proposal]:
    """Start a run and approve its plan: the cto's action and marketcom's question wait."""
    created = await client.post("/api/v1/runs", json={"mission": "Launch"}, headers=ADMIN)
    run_id = created.json()["id"]
    [plan] = await swarm.pending(run_id)
    await swarm.decide(plan.id, "approve", by="alice")
    return {p.role: p for p in await swarm.pending(run_id)}


async def mint(client: httpx.AsyncClient, proposal_id: str, who: str = "alice") -> dict[str, str]:
    made = await client.post(
        f"/api/v1/proposals/{proposal_id}/links", json={"for": who}, headers=ADMIN
    )
    assert made.status_code == 200, made.text
    links: dict[str, str] = made.json()
    return links


def path_of(url: str) -> str:
    return httpx.URL(url).raw_path.decode()


async def status_of(swarm: Swarm, proposal_id: str) -> ProposalStatus:
    return (await swarm.proposal(proposal_id)).status


async def test_a_link_approves_once_and_its_page_never_decides_on_a_get(
    client: httpx.AsyncClient, swarm: Swarm
) -> None:
    cto = (await pending_by_role(client, swarm))["cto"]
    links = await mint(client, cto.id)
    assert links["approve"].startswith("http://qapten/links/")
    url = path_of(links["approve"])

    for _ in range(2):  # a chat app's preview, then the human: GETs change nothing
        page = await client.get(url)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert await status_of(swarm, cto.id) is ProposalStatus.PENDING
    html = page.text
    assert 'method="post"' in html and f'action="{url}"' in html
    assert "alice" in html and str(escape(cto.title)) in html and "cto" in html
    assert MARKUP not in html and "&lt;script&gt;" in html  # the payload, autoescaped
    assert "form-action 'self'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"

    done = await client.post(url)
    assert done.status_code == 200 and "Approved by alice" in done.text
    decided = await swarm.proposal(cto.id)
    assert (decided.status, decided.decided_by) == (ProposalStatus.APPROVED, "alice")

    again = await client.post(url)
    assert again.status_code == 409 and "used already" in again.text
    assert (await client.get(url)).status_code == 409
    types = [e.type for e in await swarm.events(cto.run_id)]
    assert types.count("links.made") == 1 and types.count("link.used") == 1


async def test_two_clicks_at_once_decide_once(client: httpx.AsyncClient, swarm: Swarm) -> None:
    cto = (await pending_by_role(client, swarm))["cto"]
    url = path_of((await mint(client, cto.id))["approve"])
    answers = await asyncio.gather(client.post(url), client.post(url))
    assert sorted(a.status_code for a in answers) == [200, 409]


async def test_a_link_acts_on_its_own_proposal_only(
    client: httpx.AsyncClient, swarm: Swarm
) -> None:
    by_role = await pending_by_role(client, swarm)
    a, b = by_role["cto"], by_role["marketcom"]
    token = path_of((await mint(client, a.id))["approve"]).removeprefix("/links/")

    # The same signature over a payload that names proposal B: refused, B untouched.
    payload, stamp, signature = token.split(".")
    claim = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claim[0] = b.id
    forged = base64.urlsafe_b64encode(json.dumps(claim, separators=(",", ":")).encode())
    tampered = f"{forged.decode().rstrip('=')}.{stamp}.{signature}"
    # The signature's first character: all six of its bits count (the last one's low bits are
    # base64 padding, and changing only those would leave the signature intact).
    flipped = f"{payload}.{stamp}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"
    for bad in (tampered, flipped, "not-a-link", "x" * 5000):
        for method in ("GET", "POST"):
            answer = await client.request(method, f"/links/{bad}")
            assert answer.status_code == 400 and "not valid" in answer.text
            assert "Traceback" not in answer.text
    assert await status_of(swarm, b.id) is ProposalStatus.PENDING

    # The genuine token decides its own proposal, A, and nothing else.
    assert (await client.post(f"/links/{token}")).status_code == 200
    assert await status_of(swarm, a.id) is ProposalStatus.APPROVED
    assert await status_of(swarm, b.id) is ProposalStatus.PENDING
    refused = [e.data for e in await swarm.events() if e.type == "access.refused"]
    assert [r["status"] for r in refused] == [400] * 4  # the POSTs: a GET records nothing


async def test_a_link_expires(client: httpx.AsyncClient, swarm: Swarm) -> None:
    cto = (await pending_by_role(client, swarm))["cto"]
    # Signed in the past, as itsdangerous reads the age from the token's own timestamp.
    old = LinkSigner(SECRET, clock=lambda: time.time() - TTL - 5).make(cto.id, "alice", "approve")
    recent = LinkSigner(SECRET, clock=lambda: time.time() - TTL + 60).make(
        cto.id, "alice", "reject"
    )
    for method in ("GET", "POST"):
        expired = await client.request(method, f"/links/{old}")
        assert expired.status_code == 410 and "expired" in expired.text
    assert await status_of(swarm, cto.id) is ProposalStatus.PENDING
    assert (await client.post(f"/links/{recent}")).status_code == 200  # not yet expired
    assert await status_of(swarm, cto.id) is ProposalStatus.REJECTED


async def test_a_link_of_someone_who_may_not_decide_the_role_is_forbidden(
    client: httpx.AsyncClient, swarm: Swarm
) -> None:
    cto = (await pending_by_role(client, swarm))["cto"]
    # Not minted for them: maria approves marketcom only.
    minted = await client.post(
        f"/api/v1/proposals/{cto.id}/links", json={"for": "maria"}, headers=ADMIN
    )
    assert minted.status_code == 422 and "may not decide cto proposals" in minted.text
    # A link signed all the same (or made before her rights changed) is refused when used.
    token = LinkSigner(SECRET).make(cto.id, "maria", "approve")
    forbidden = await client.post(f"/links/{token}")
    assert forbidden.status_code == 403 and "may not decide cto proposals" in forbidden.text
    assert await status_of(swarm, cto.id) is ProposalStatus.PENDING
    [event] = [e for e in await swarm.events(cto.run_id) if e.type == "access.refused"]
    assert (event.data["status"], event.data["who"]) == (403, "maria")
    assert token not in json.dumps(event.data)  # the log never holds a link
    # So is a link of a name that has no token (any more).
    gone = LinkSigner(SECRET).make(cto.id, "mallory", "approve")
    assert (await client.post(f"/links/{gone}")).status_code == 403
    assert await status_of(swarm, cto.id) is ProposalStatus.PENDING


async def test_the_reject_link_rejects_with_the_reason_given(
    client: httpx.AsyncClient, swarm: Swarm
) -> None:
    cto = (await pending_by_role(client, swarm))["cto"]
    url = path_of((await mint(client, cto.id))["reject"])
    page = await client.get(url)
    assert page.status_code == 200 and 'name="feedback"' in page.text
    done = await client.post(url, data={"feedback": "too risky"})
    assert done.status_code == 200 and "Rejected by alice" in done.text
    decided = await swarm.proposal(cto.id)
    assert (decided.status, decided.decided_by) == (ProposalStatus.REJECTED, "alice")
    assert decided.feedback == "too risky"


async def test_a_link_to_a_proposal_decided_meanwhile_says_by_whom(
    client: httpx.AsyncClient, swarm: Swarm
) -> None:
    cto = (await pending_by_role(client, swarm))["cto"]
    url = path_of((await mint(client, cto.id))["approve"])
    await swarm.decide(cto.id, "approve", by="bob")
    assert (await client.get(url)).status_code == 409
    late = await client.post(url)
    assert late.status_code == 409 and "already approved by bob" in late.text


async def test_making_links_is_for_admins_and_checks_what_it_signs(
    client: httpx.AsyncClient, swarm: Swarm
) -> None:
    by_role = await pending_by_role(client, swarm)
    cto, question = by_role["cto"], by_role["marketcom"]
    url = f"/api/v1/proposals/{cto.id}/links"
    for headers in (VIEWER, MARKETCOM):
        refused = await client.post(url, json={"for": "alice"}, headers=headers)
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert (await client.post(url, json={"for": "alice"})).status_code == 401
    unknown = await client.post(url, json={"for": "mallory"}, headers=ADMIN)
    assert unknown.status_code == 422 and "alice, maria, victor" in unknown.json()["message"]
    missing = await client.post(
        "/api/v1/proposals/p_nope/links", json={"for": "alice"}, headers=ADMIN
    )
    assert missing.status_code == 404
    assert (await client.post(url, json={}, headers=ADMIN)).status_code == 422

    # A question takes an answer, which no link gives: a reject link only.
    links = await mint(client, question.id, "maria")
    assert links["approve"] is None and links["reject"].startswith("http://qapten/links/")

    await swarm.decide(cto.id, "approve", by="alice")
    late = await client.post(url, json={"for": "alice"}, headers=ADMIN)
    assert late.status_code == 409 and late.json()["details"]["decided_by"] == "alice"


async def test_links_are_off_without_a_secret(swarm: Swarm) -> None:
    app = create_app(swarm, ApiSettings(tokens=tuple(TOKENS.values())))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://qapten") as client:
        cto = (await pending_by_role(client, swarm))["cto"]
        made = await client.post(
            f"/api/v1/proposals/{cto.id}/links", json={"for": "alice"}, headers=ADMIN
        )
        assert made.status_code == 404 and made.json()["code"] == "links_off"
        token = LinkSigner(SECRET).make(cto.id, "alice", "approve")
        for method in ("GET", "POST"):
            assert (await client.request(method, f"/links/{token}")).status_code == 404
    assert await status_of(swarm, cto.id) is ProposalStatus.PENDING
    with pytest.raises(ValidationError, match="at least 32 characters"):
        ApiSettings(links_secret="short")


async def test_the_http_route_and_the_links_share_one_decision_path(
    client: httpx.AsyncClient, swarm: Swarm
) -> None:
    """decide_as is what the decision route runs: the same refusal, word for word."""
    cto = (await pending_by_role(client, swarm))["cto"]
    maria = TokenBook(TOKENS.values()).by_name("maria")
    assert maria is not None
    with pytest.raises(Forbidden) as caught:
        await decide_as(swarm, maria, cto.id, Approve())
    over_http = await client.post(
        f"/api/v1/proposals/{cto.id}/decision", json={"decision": "approve"}, headers=MARKETCOM
    )
    assert over_http.status_code == 403 and over_http.json()["message"] == caught.value.message
    assert caught.value.run_id == cto.run_id


async def test_the_store_keeps_a_nonce_once(db: str) -> None:
    store = await Store.open(engine_url(db))
    try:
        assert await store.link_used_by("n1") is None
        assert await store.use_link("n1", "p_1", "alice", run_id="r_1") is True
        assert await store.use_link("n1", "p_1", "bob") is False  # whoever comes second
        assert await store.link_used_by("n1") == "alice"
        assert await store.use_link("n2", "p_1", "alice") is True
        assert [e.type for e in await store.events(run_id="r_1")] == ["link.used"]
    finally:
        await store.close()


def test_a_token_is_for_its_secret_and_its_age_only() -> None:
    signer = LinkSigner(SECRET)
    token = signer.make("p_1", "alice", "approve")
    claim = signer.read(token, TTL)
    assert (claim.proposal_id, claim.who, claim.decision) == ("p_1", "alice", "approve")
    assert signer.read(signer.make("p_1", "alice", "approve"), TTL).nonce != claim.nonce
    with pytest.raises(BadLink):
        LinkSigner("t" * 40).read(token, TTL)
    past = LinkSigner(SECRET, clock=lambda: time.time() - 120).make("p_1", "alice", "approve")
    with pytest.raises(ExpiredLink):
        signer.read(past, 60)
    with pytest.raises(ValueError, match="approve or reject"):
        signer.make("p_1", "alice", "edit")  # type: ignore[arg-type]
