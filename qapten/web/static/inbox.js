// The inbox: pending proposals across runs (newest first), a new-mission form and recent runs,
// refreshed whenever the live event stream says something happened.

import { api, badge, boot, debounced, el, follow, runUrl, syncCards, timeEl } from "./qapten.js";

const cards = document.querySelector("[data-testid=inbox]");
const empty = document.querySelector("[data-testid=inbox-empty]");
const count = document.querySelector("[data-testid=pending-count]");
const runs = document.querySelector("[data-testid=runs]");
const missionForm = document.querySelector("[data-testid=mission-form]");
const missionError = document.querySelector("[data-testid=mission-error]");

async function refresh() {
  const [pending, recent] = await Promise.all([
    api("/proposals?status=pending&limit=100"),
    api("/runs?limit=20"),
  ]);
  syncCards(cards, pending.items, scheduleRefresh);
  const more = pending.next_cursor ? "+" : "";
  count.textContent = pending.items.length ? `(${pending.items.length}${more})` : "";
  empty.hidden = pending.items.length > 0;
  runs.replaceChildren(...recent.items.map(runItem));
}

const scheduleRefresh = debounced(refresh);

function runItem(run) {
  const link = el("a", { text: run.mission, className: "mission" });
  link.href = runUrl(run.id);
  return el(
    "li",
    { testid: "run-item" },
    badge(run.status),
    " ",
    link,
    el("br"),
    el("small", {}, el("code", { text: run.id }), " · ", timeEl(run.created_at)),
  );
}

missionForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  missionError.textContent = "";
  const button = missionForm.querySelector("button");
  button.disabled = true;
  try {
    await api("/runs", { method: "POST", body: { mission: missionForm.elements.mission.value } });
    missionForm.reset();
    scheduleRefresh();
  } catch (failure) {
    missionError.textContent = failure.message;
  } finally {
    button.disabled = false;
  }
});

boot(async () => {
  await refresh();
  // Any event may mean a new or decided proposal, or a run that moved: look again.
  follow("/events", { onEvent: scheduleRefresh });
});
