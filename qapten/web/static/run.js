// The run page: status, mission and result, the task tree, the run's proposals (pending ones as
// decision cards) and the timeline of its events, all kept live by the run's event stream.

import {
  ApiError,
  api,
  badge,
  boot,
  debounced,
  el,
  follow,
  pretty,
  syncCards,
  timeEl,
} from "./qapten.js";

const page = document.querySelector("[data-testid=run]");
const runId = page.dataset.runId;
const runPath = `/runs/${encodeURIComponent(runId)}`;
const find = (testid) => page.querySelector(`[data-testid=${testid}]`);

async function refresh() {
  let run;
  try {
    run = await api(runPath);
  } catch (failure) {
    if (!(failure instanceof ApiError) || failure.status !== 404) throw failure;
    find("run-error").textContent = failure.message;
    for (const part of page.querySelectorAll(".facts, .columns")) part.hidden = true;
    return false;
  }
  const status = find("run-status");
  status.textContent = run.status;
  status.className = `badge status is-${run.status}`;
  find("run-mission").textContent = run.mission;
  find("run-result").textContent = run.result ?? run.error ?? "—";
  find("run-error").textContent = run.error ?? "";
  const spent = Object.entries(run.tokens).map(([role, n]) => `${role} ${n}`);
  const total = Object.values(run.tokens).reduce((sum, n) => sum + n, 0);
  if (spent.length) spent.push(`total ${total}`);
  find("run-tokens").textContent = spent.join(" · ") || "—";

  find("task-tree").replaceChildren(...taskTree(run.tasks));
  const pending = run.proposals.filter((p) => p.status === "pending");
  syncCards(find("inbox"), pending, scheduleRefresh);
  const decided = run.proposals.filter((p) => p.status !== "pending");
  find("decided").replaceChildren(...decided.map(decidedItem));
  return true;
}

const scheduleRefresh = debounced(refresh);

// The tasks as nested lists: each task under the task that delegated it.
function taskTree(tasks) {
  const byId = new Map(tasks.map((task) => [task.id, task]));
  const item = (task) => {
    const li = el(
      "li",
      { testid: "task" },
      el("p", {}, el("strong", { text: task.role }), " ", badge(task.status)),
      el("p", { text: task.brief, className: "brief" }),
    );
    li.dataset.role = task.role;
    li.dataset.status = task.status;
    if (task.result) li.append(el("p", { text: `Result: ${task.result}`, className: "result" }));
    if (task.error) li.append(el("p", { text: `Error: ${task.error}`, className: "error" }));
    const children = task.children.map((id) => byId.get(id)).filter(Boolean);
    if (children.length) li.append(el("ul", {}, ...children.map(item)));
    return li;
  };
  return tasks.filter((task) => !task.parent || !byId.has(task.parent)).map(item);
}

function decidedItem(proposal) {
  const li = el(
    "li",
    { testid: "decided-proposal" },
    badge(proposal.status),
    " ",
    el("span", { text: proposal.kind, className: "badge kind" }),
    " ",
    el("strong", { text: proposal.role }),
    " ",
    el("span", { text: proposal.title }),
  );
  const by = proposal.decided_by ? ` by ${proposal.decided_by}` : "";
  li.append(el("small", { text: `${by}${proposal.feedback ? `: ${proposal.feedback}` : ""}` }));
  const details = el("details", {}, el("summary", { text: "Payload" }));
  details.append(el("pre", { text: pretty(proposal.decided_payload ?? proposal.payload) }));
  li.append(details);
  return li;
}

// One line per event: its time, its type and its data as "key: value" pairs.
function addEvent(event) {
  const pairs = Object.entries(event.data).map(
    ([key, value]) => `${key}: ${typeof value === "string" ? value : JSON.stringify(value)}`,
  );
  const li = el(
    "li",
    { testid: "event" },
    timeEl(event.created_at),
    " ",
    el("code", { text: event.type }),
    el("span", { text: pairs.join(" · "), className: "data" }),
  );
  li.dataset.type = event.type;
  find("timeline").append(li);
}

boot(async () => {
  if (!(await refresh())) return; // no such run: the page says so
  // The timeline so far, a page at a time; then the live stream resumes after the last one.
  let lastId = 0;
  for (;;) {
    const events = await api(`${runPath}/events?after=${lastId}&limit=500`);
    events.items.forEach(addEvent);
    if (events.items.length) lastId = events.items.at(-1).id;
    if (!events.next_cursor) break;
  }
  follow(`${runPath}/events`, {
    lastId,
    onEvent: ({ data }) => {
      addEvent(data);
      scheduleRefresh();
    },
  });
});
