// Shared by the inbox and the run page: the token, calls to the JSON API, the live event stream,
// and the decision card. Agent text is only ever set with textContent, never parsed as HTML.

const API = document.body.dataset.api;
const HOME = document.body.dataset.home;
const TOKEN_KEY = "qapten.token";

// -- the token -------------------------------------------------------------------------------

// The token arrives once in the URL fragment (never sent to the server, never in its logs),
// then lives in this tab's sessionStorage; we drop it from the address bar and the history.
function takeTokenFromUrl() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const token = fragment.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, "", location.pathname + location.search);
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

// Hide the page and ask for a token; the page starts afresh once one is given.
export function askForToken(reason) {
  sessionStorage.removeItem(TOKEN_KEY);
  const form = document.querySelector("[data-testid=token-form]");
  document.querySelector(".content").hidden = true;
  document.querySelector("[data-testid=sign-out]").hidden = true;
  form.querySelector(".token-reason").textContent = reason;
  form.hidden = false;
  form.onsubmit = (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, form.elements.token.value.trim());
    location.reload();
  };
  form.elements.token.focus();
}

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.code;
  }
}

// -- the JSON API ----------------------------------------------------------------------------

export async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: `Bearer ${token()}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(API + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// Follow a Server-Sent Events stream with fetch (EventSource cannot send the Authorization
// header). Calls onEvent({id, type, data}) for each event; reconnects after errors, resuming with
// Last-Event-ID so that no event is lost or repeated. Stops when the token is refused.
export async function follow(path, { lastId = null, onEvent }) {
  const status = document.querySelector("[data-testid=live-status]");
  let delay = 500;
  for (;;) {
    try {
      const headers = { Authorization: `Bearer ${token()}`, Accept: "text/event-stream" };
      if (lastId !== null) headers["Last-Event-ID"] = String(lastId);
      const response = await fetch(API + path, { headers, cache: "no-store" });
      if (response.status === 401) {
        const body = await response.json().catch(() => null);
        status.textContent = "offline";
        askForToken(`The server refused the token: ${body?.message || "unauthorized"}`);
        return;
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      status.textContent = "live";
      status.classList.add("on");
      delay = 500;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      let carry = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        // Lines end with \r\n, \r or \n; a chunk may end between \r and \n, so a final \r
        // waits for the next chunk before the line ends are made \n.
        let text = carry + value;
        carry = text.endsWith("\r") ? "\r" : "";
        if (carry) text = text.slice(0, -1);
        buffer += text.replace(/\r\n?/g, "\n");
        // Events end with a blank line; the buffer may hold several events, or part of one.
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = parseEvent(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (event.id !== null) lastId = event.id;
          if (event.data !== null) onEvent(event);
        }
      }
    } catch (error) {
      console.warn("event stream:", error.message);
    }
    status.textContent = "reconnecting…";
    status.classList.remove("on");
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 10_000);
  }
}

function parseEvent(block) {
  const event = { id: null, type: "message", data: null };
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue; // a comment: the server's keep-alive ping
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "id") event.id = value;
    else if (field === "event") event.type = value;
    else if (field === "data") data.push(value);
  }
  if (data.length) event.data = JSON.parse(data.join("\n"));
  return event;
}

// Run `task` soon, at most one at a time: a burst of events causes one or two refreshes.
export function debounced(task, wait = 150) {
  let timer = null;
  let running = null;
  let again = false;
  const run = async () => {
    timer = null;
    if (running) {
      again = true;
      return;
    }
    running = task().catch((error) => console.error(error));
    await running;
    running = null;
    if (again) {
      again = false;
      schedule();
    }
  };
  const schedule = () => {
    if (timer === null) timer = setTimeout(run, wait);
  };
  return schedule;
}

// -- small DOM helpers -----------------------------------------------------------------------

export function el(tag, { text, className, testid } = {}, ...children) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  if (testid) node.dataset.testid = testid;
  node.append(...children);
  return node;
}

export function timeEl(iso) {
  const node = el("time", { text: new Date(iso).toLocaleString() });
  node.dateTime = iso;
  return node;
}

export function badge(text, kind = "status") {
  const node = el("span", { text, className: `badge ${kind} is-${text}` });
  return node;
}

export function runUrl(runId) {
  return `${HOME}runs/${encodeURIComponent(runId)}`;
}

export function pretty(value) {
  return JSON.stringify(value, null, 2);
}

// -- the decision card -----------------------------------------------------------------------

// Which buttons each kind gets, in order; the API has the last word (ALLOWED_DECISIONS).
const DECISIONS = {
  question: ["answer", "reject"],
  budget: ["approve", "edit", "reject"],
  default: ["approve", "edit", "revise", "reject"],
};
const BUTTON_LABELS = {
  approve: "Approve",
  edit: "Save edit and approve",
  revise: "Ask for a revision",
  reject: "Reject",
  answer: "Answer",
};

// A card for one pending proposal; `onDecided` runs after the API recorded the decision.
export function proposalCard(proposal, onDecided) {
  const card = document.getElementById("proposal-card").content.firstElementChild.cloneNode(true);
  const find = (selector) => card.querySelector(selector);
  card.dataset.proposalId = proposal.id;
  card.dataset.kind = proposal.kind;
  card.dataset.role = proposal.role;
  find(".kind").textContent = proposal.kind;
  find(".kind").classList.add(`is-${proposal.kind}`);
  find(".role").textContent = proposal.role;
  find(".act").textContent = proposal.act;
  find(".title").textContent = proposal.title;
  const runLink = find(".run-link");
  runLink.textContent = proposal.run_id;
  runLink.href = runUrl(proposal.run_id);
  find(".created").replaceWith(timeEl(proposal.created_at));
  find(".payload").textContent = pretty(proposal.payload);

  const form = find("form.decide");
  const error = find(".error");
  const isQuestion = proposal.kind === "question";
  // Give each field a unique id so that its label is announced with it.
  form.elements.feedback.id = `feedback-${proposal.id}`;
  form.elements.payload.id = `payload-${proposal.id}`;
  find(".feedback-label .label-text").textContent = isQuestion ? "Your answer" : "Feedback";
  if (isQuestion) find(".edit-box").remove();
  else form.elements.payload.value = pretty(proposal.payload);

  // "Edit" first opens the payload editor; once it is open, the button saves the edit.
  const editBox = find(".edit-box");
  const editLabel = () => (editBox?.open ? BUTTON_LABELS.edit : "Edit…");
  const actions = find(".actions");
  for (const decision of DECISIONS[proposal.kind] || DECISIONS.default) {
    const label = decision === "edit" ? editLabel() : BUTTON_LABELS[decision];
    const button = el("button", { text: label, testid: decision });
    button.type = "button";
    if (decision === "edit") {
      editBox.addEventListener("toggle", () => (button.textContent = editLabel()));
    }
    if (decision === "reject") button.className = "danger";
    if (decision === "approve" || decision === "answer") button.className = "primary";
    button.addEventListener("click", () => decide(decision));
    actions.append(button);
  }

  async function decide(decision) {
    error.textContent = "";
    const body = { decision };
    const feedback = form.elements.feedback.value.trim();
    if (feedback && decision !== "approve" && decision !== "edit") body.feedback = feedback;
    if (decision === "edit") {
      if (!editBox.open) {
        editBox.open = true;
        form.elements.payload.focus();
        return;
      }
      try {
        body.payload = JSON.parse(form.elements.payload.value);
      } catch (parseError) {
        error.textContent = `The edited payload is not valid JSON: ${parseError.message}`;
        return;
      }
    }
    setBusy(true);
    try {
      await api(`/proposals/${encodeURIComponent(proposal.id)}/decision`, {
        method: "POST",
        body,
      });
      card.dataset.decided = decision;
      card.remove();
      onDecided(proposal);
    } catch (failure) {
      error.textContent = failure.message;
      if (failure.status !== 409) {
        setBusy(false);
        return;
      }
      // Someone else decided first: the card stays, to say so, until it is dismissed.
      card.dataset.stale = "true";
      const dismiss = el("button", { text: "Dismiss", testid: "dismiss" });
      dismiss.type = "button";
      dismiss.addEventListener("click", () => card.remove());
      actions.replaceChildren(dismiss);
    }
  }

  function setBusy(busy) {
    for (const button of actions.querySelectorAll("button")) button.disabled = busy;
  }
  return card;
}

// Keep `container` showing one card per proposal, newest first, reusing existing cards so that
// a live refresh never wipes what the human is typing. Cards of proposals decided elsewhere go,
// except a stale one that still shows why its decision failed.
export function syncCards(container, proposals, onDecided) {
  const existing = new Map();
  for (const card of container.querySelectorAll("[data-testid=proposal]")) {
    existing.set(card.dataset.proposalId, card);
  }
  const wanted = proposals.map(
    (proposal) => existing.get(proposal.id) || proposalCard(proposal, onDecided),
  );
  const keep = new Set(wanted);
  for (const card of existing.values()) {
    if (!keep.has(card) && card.dataset.stale !== "true") card.remove();
  }
  wanted.forEach((card, index) => {
    if (container.children[index] !== card) container.insertBefore(card, container.children[index]);
  });
}

// -- page start ------------------------------------------------------------------------------

// Run `start` if there is a token (from the URL or the tab's storage), else ask for one.
export function boot(start) {
  takeTokenFromUrl();
  const signOut = document.querySelector("[data-testid=sign-out]");
  signOut.addEventListener("click", () => askForToken("Signed out."));
  if (!token()) {
    askForToken("");
    return;
  }
  document.querySelector(".content").hidden = false;
  signOut.hidden = false;
  start().catch((error) => {
    if (error instanceof ApiError && error.status === 401) {
      askForToken(`The server refused the token: ${error.message}`);
    } else {
      console.error(error);
    }
  });
}
