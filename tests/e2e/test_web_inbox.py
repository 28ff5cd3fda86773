"""The web inbox in headless Chromium (Debian's, driven by Playwright) against a real server:
a proposal appears live, is decided with clicks, the run page follows the run to its end; and
markup written by an agent is shown as text and never runs. First, the pages over plain HTTP.

Set QAPTEN_SCREENSHOTS=DIR to keep screenshots of the inbox and the run page.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    Response,
    async_playwright,
    expect,
)

from qapten.web import web_router

from .web_app import CTO_BRIEF, RESULT, XSS, make_app
from .web_fixtures import CHROMIUM, CHROMIUM_ARGS, WebServer, web_server

TOKEN = "web-inbox-token"
TIMEOUT_MS = 15_000


@pytest.fixture
def server(tmp_path: Path) -> Iterator[WebServer]:
    with web_server(tmp_path, TOKEN) as running:
        yield running


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"Debian's chromium is not at {CHROMIUM}: run scripts/install-browser")
    expect.set_options(timeout=TIMEOUT_MS)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


class PageErrors:
    """What went wrong in pages: script and console errors (a CSP violation is one), and HTTP
    error responses, kept apart because some are expected."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.responses: list[tuple[int, str]] = []

    def watch(self, page: Page) -> Page:
        page.set_default_timeout(TIMEOUT_MS)
        page.on("pageerror", lambda error: self.messages.append(f"pageerror: {error}"))
        page.on("console", self._console)
        page.on("response", self._response)
        return page

    def _console(self, message: ConsoleMessage) -> None:
        # The browser also logs each HTTP error response: those are checked in `responses`.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.messages.append(f"console: {message.text}")

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.responses.append((response.status, urlsplit(response.url).path))


async def new_page(browser: Browser, errors: PageErrors) -> Page:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    return errors.watch(await context.new_page())


async def start_run(server: WebServer, mission: str) -> str:
    async with httpx.AsyncClient(base_url=f"{server.url}/api/v1", headers=server.headers) as api:
        created = await api.post("/runs", json={"mission": mission})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def api_get(server: WebServer, path: str) -> Any:
    async with httpx.AsyncClient(base_url=f"{server.url}/api/v1", headers=server.headers) as api:
        response = await api.get(path)
    assert response.status_code == 200, response.text
    return response.json()


async def screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("QAPTEN_SCREENSHOTS")
    if folder:
        await page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def card(page: Page, *, role: str, kind: str) -> Locator:
    return page.locator(f"[data-testid=proposal][data-role={role}][data-kind={kind}]")


@pytest.fixture
async def pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process; the pages need neither a token nor an open swarm (they hold no data:
    their script fetches it with the token)."""
    monkeypatch.setenv("QAPTEN_TEST_DB", f"sqlite:///{tmp_path / 'qapten.db'}")
    monkeypatch.setenv("QAPTEN_ADMIN_TOKEN", TOKEN)
    transport = httpx.ASGITransport(app=make_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://qapten") as client:
        yield client


async def test_pages_hold_no_data_and_forbid_foreign_scripts(pages: httpx.AsyncClient) -> None:
    inbox = await pages.get("/")
    assert inbox.status_code == 200 and inbox.headers["content-type"].startswith("text/html")
    csp = inbox.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert 'data-api="/api/v1"' in inbox.text and 'src="/static/inbox.js"' in inbox.text

    # A run id from the URL is escaped into the page, never markup.
    run = await pages.get("/runs/%22%3E%3Cb%20onmouseover%3Dalert(1)%3E")
    assert run.status_code == 200
    assert "<b onmouseover" not in run.text
    assert 'data-run-id="&#34;&gt;&lt;b onmouseover=alert(1)&gt;"' in run.text

    script = await pages.get("/static/qapten.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javasc")
    assert "textContent" in script.text and "innerHTML" not in script.text
    for name in ("__init__.py", "..%2F__init__.py", "inbox.html", "nope.js"):
        assert (await pages.get(f"/static/{name}")).status_code == 404, name


async def test_the_pages_work_under_a_prefix(tmp_path: Path) -> None:
    host = FastAPI()
    host.include_router(web_router(api_prefix="/ops/api/v1"), prefix="/ops")
    transport = httpx.ASGITransport(app=host)
    async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
        page = (await client.get("/ops/runs/r_1")).text
    assert 'data-api="/ops/api/v1"' in page and 'data-home="/ops/"' in page
    assert 'href="/ops/static/qapten.css"' in page and 'data-run-id="r_1"' in page


@pytest.mark.slow
async def test_a_proposal_appears_live_is_approved_and_the_run_page_follows(
    server: WebServer, browser: Browser
) -> None:
    errors = PageErrors()
    inbox = await new_page(browser, errors)
    await inbox.goto(f"{server.url}/#token={TOKEN}")
    await expect(inbox.get_by_test_id("live-status")).to_have_text("live")
    assert "token" not in inbox.url  # the token left the address bar (and the history)
    await expect(inbox.get_by_test_id("inbox-empty")).to_be_visible()
    await expect(inbox.get_by_test_id("proposal")).to_have_count(0)

    # The run starts after the page is open: its plan must arrive over the live stream.
    run_id = await start_run(server, "Launch the coaching app")
    plan = card(inbox, role="ceo", kind="plan")
    await expect(plan).to_have_count(1)
    await expect(inbox.get_by_test_id("inbox-empty")).to_be_hidden()
    await expect(plan.get_by_test_id("proposal-title")).to_have_text("Delegate to cto, marketcom")
    [pending] = (await api_get(server, "/proposals?status=pending"))["items"]
    shown = await plan.get_by_test_id("proposal-payload").text_content()
    assert json.loads(shown or "") == pending["payload"]  # the exact payload
    await expect(plan.get_by_test_id("proposal-run")).to_have_text(run_id)
    await expect(inbox.get_by_test_id("run-item")).to_contain_text(["Launch the coaching app"])
    await expect(plan.get_by_test_id("answer")).to_have_count(0)  # not a question
    await screenshot(inbox, "inbox")

    # The run page, open in another tab before the plan is decided: only the CEO's task so far.
    run_page = await new_page(browser, errors)
    await run_page.goto(f"{server.url}/runs/{run_id}#token={TOKEN}")
    await expect(run_page.get_by_test_id("live-status")).to_have_text("live")
    await expect(run_page.get_by_test_id("run-mission")).to_have_text("Launch the coaching app")
    await expect(run_page.get_by_test_id("task")).to_have_count(1)

    # A revision without feedback is refused by the API, and the page says why.
    await plan.get_by_test_id("revise").click()
    await expect(plan.get_by_test_id("decision-error")).to_contain_text("needs 'feedback'")
    await plan.get_by_test_id("approve").click()
    await expect(plan).to_have_count(0)

    # The run page grows live: the reports' tasks under the CEO's, and their proposals.
    tree = run_page.get_by_test_id("task-tree")
    await expect(tree.locator("[data-role=ceo] [data-role=cto]")).to_have_count(1)
    await expect(tree.locator("[data-role=ceo] [data-role=marketcom]")).to_have_count(1)
    await expect(tree.get_by_test_id("task").nth(1)).to_contain_text(CTO_BRIEF)
    action = card(run_page, role="cto", kind="action")
    question = card(run_page, role="marketcom", kind="question")
    await expect(action).to_have_count(1)
    await expect(question).to_have_count(1)
    await expect(card(inbox, role="cto", kind="action")).to_have_count(1)  # and in the inbox
    await expect(run_page.get_by_test_id("decided-proposal")).to_contain_text(["approved"])

    # Decide the rest on the run page: edit the action, answer the question, approve the rest.
    payload = action.get_by_test_id("edit-payload")
    await expect(payload).to_be_hidden()
    await action.get_by_test_id("edit").click()  # the first click opens the editor
    await expect(payload).to_be_focused()
    await expect(action.get_by_test_id("edit")).to_have_text("Save edit and approve")
    edited = json.loads(await payload.input_value())
    edited["content"] = "# Plan, edited by a human"
    await payload.fill(json.dumps(edited))
    await action.get_by_test_id("edit").click()
    await expect(action).to_have_count(0)
    await expect(question.get_by_test_id("approve")).to_have_count(0)
    await question.get_by_test_id("feedback").fill("March 3rd")
    await question.get_by_test_id("answer").click()
    deliverable = card(run_page, role="marketcom", kind="deliverable")
    await deliverable.get_by_test_id("approve").click()
    final = card(run_page, role="ceo", kind="deliverable")
    await final.get_by_test_id("approve").click()

    await expect(run_page.get_by_test_id("run-status")).to_have_text("done")
    await expect(run_page.get_by_test_id("run-result")).to_have_text(RESULT)
    await expect(tree.get_by_test_id("task")).to_have_count(3)
    await expect(tree.locator("[data-testid=task]:not([data-status=done])")).to_have_count(0)
    await expect(run_page.locator("[data-testid=event][data-type='run.done']")).to_have_count(1)
    await expect(run_page.get_by_test_id("proposal")).to_have_count(0)
    await expect(inbox.get_by_test_id("inbox-empty")).to_be_visible()
    await screenshot(run_page, "run")

    proposals = (await api_get(server, "/proposals"))["items"]
    decided = {f"{p['kind']}:{p['role']}": p for p in proposals}
    assert decided["action:cto"]["status"] == "edited"
    assert decided["action:cto"]["decided_payload"]["content"] == "# Plan, edited by a human"
    assert decided["question:marketcom"]["feedback"] == "March 3rd"
    assert decided["deliverable:ceo"]["decided_by"] == "admin"
    assert errors.messages == []
    assert errors.responses == [(422, f"/api/v1/proposals/{pending['id']}/decision")]


@pytest.mark.slow
async def test_agent_markup_is_shown_as_text_and_never_runs(
    server: WebServer, browser: Browser
) -> None:
    errors = PageErrors()
    run_id = await start_run(server, "Launch the coaching app")
    page = await new_page(browser, errors)
    # Without a token the page asks for one, and shows nothing else.
    await page.goto(f"{server.url}/")
    await expect(page.get_by_test_id("token-form")).to_be_visible()
    await expect(page.get_by_test_id("inbox")).to_be_hidden()
    await page.get_by_label("Access token").fill(TOKEN)
    await page.get_by_role("button", name="Use token").click()
    plan = card(page, role="ceo", kind="plan")
    await expect(plan).to_have_count(1)
    # The markup is there, as text: in the payload exactly as JSON shows it.
    payload = plan.get_by_test_id("proposal-payload")
    await expect(payload).to_contain_text("<script>window.__xss = 1</script><img src=x onerror=")
    assert json.loads(await payload.text_content() or "")["tasks"][0]["brief"] == CTO_BRIEF
    await plan.get_by_test_id("approve").click()
    await expect(plan).to_have_count(0)  # decided: leaving the page cannot cut the request

    # The CTO's brief (task tree, timeline) and file content (a new card) carry it too.
    await page.goto(f"{server.url}/runs/{run_id}")  # the token stays in the tab's storage
    action = card(page, role="cto", kind="action")
    await expect(action.get_by_test_id("proposal-payload")).to_contain_text(XSS.split('"')[0])
    brief = page.locator("[data-testid=task][data-role=cto] > .brief")
    await expect(brief).to_have_text(CTO_BRIEF)
    await expect(page.get_by_test_id("timeline")).to_contain_text("<script>window.__xss = 1")
    await expect(page.get_by_test_id("live-status")).to_have_text("live")

    # Nothing was parsed as markup: no injected element exists, nothing ran.
    assert await page.locator("main script, main img").count() == 0
    assert await page.evaluate("() => window.__xss") is None
    await page.goto(f"{server.url}/")
    await expect(card(page, role="cto", kind="action")).to_contain_text("<script>")
    await expect(page.get_by_test_id("live-status")).to_have_text("live")
    assert await page.locator("main script, main img").count() == 0
    assert await page.evaluate("() => window.__xss") is None
    assert (errors.messages, errors.responses) == ([], [])
