"""Crash anywhere: missions driven over HTTP through a real server process that is killed with
SIGKILL again and again, then checked for anything lost or done twice.

Run by hand::

    python -m tests.reliability.crash_harness --kills 100

The server is a real uvicorn process serving `create_app` over a `Swarm`, as `qapten serve` does,
with a scripted model and `append_effect`, a tool that appends a line tagged with its call id to
an external file: it is not idempotent, so an effect applied twice shows as two lines. To restart
fast, a fork server imports everything once and forks each new server process: a restart costs a
fork, not a second of imports, and nothing of a dead server survives in the next one (the fork
server never opens the database).

Fault injection lives here, in the server process, never in the engine: ``QAPTEN_TEST_KILL_AT`` =
``POINT:N`` makes the process SIGKILL itself the N-th time it reaches POINT:

==========  ======================================================================================
model       inside a model call (the scripted model is answering)
tool        inside the tool: the journal recorded ``started`` and the effect line is written
decision    right after a decision is committed (`Store.decide`), before the HTTP answer
checkpoint  inside a checkpoint write: the row is inserted, the transaction not yet committed
==========  ======================================================================================

Other lives end by a SIGKILL from the harness after a random delay. Before dying the process notes
the point in ``kills.jsonl``. After each death the harness checks the database
(``PRAGMA integrity_check``), notes which runs were ``running``, starts a server on the same
database and keeps driving; those runs must move on by themselves: no decision is made on them
until they do. At the end every run must be ``done``, and the database, the effects file, the
model's call log and the harness's own log of what the API told it must agree.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import queue
import random
import re
import select
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import traceback
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from qapten import Swarm, ToolContext
from qapten.api import ApiSettings, create_app
from qapten.checkpoints import InlineSqliteSaver
from qapten.proposals import AUTO_DECIDER, Proposal
from qapten.store import Store
from qapten.testing import Endless, RecordedCall, ScriptedChatModel, ask, delegate, deliver, use

from ..servers import ROOT, free_port

TOOL = "tests.reliability.crash_harness:append_effect"
KILL_ENV = "QAPTEN_TEST_KILL_AT"
WORK_ENV = "QAPTEN_CRASH_DIR"
POINTS = ("model", "tool", "decision", "checkpoint")
TOKENS = {"alice": ("crash-alice-token", "admin"), "bob": ("crash-bob-token", "approver")}
LEASE_TTL = 1.0  # a dead process's lease on a run lapses after this long
FORK_SERVER_LIMIT = 3600.0  # seconds; the fork server stops by itself after this long

# -- the server process ----------------------------------------------------------------------


class KillSwitch:
    """SIGKILL this process the N-th time POINT is reached (``QAPTEN_TEST_KILL_AT=POINT:N``)."""

    def __init__(self, spec: str, log: Path) -> None:
        point, _, n = spec.partition(":")
        self.point, self.n, self.seen, self.log = point, int(n or 0), 0, log

    def due(self, point: str) -> bool:
        if point != self.point:
            return False
        self.seen += 1
        return self.seen == self.n

    def die(self, detail: str) -> None:
        _append(self.log, {"pid": os.getpid(), "point": self.point, "detail": detail})
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(30)  # SIGKILL is immediate; were it not, never carry on
        os._exit(99)

    def reached(self, point: str, detail: str = "") -> None:
        if self.due(point):
            self.die(detail)


_switch = KillSwitch("", Path(os.devnull))
_hooked = False


def _work() -> Path:
    return Path(os.environ[WORK_ENV])


def _append(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def append_effect(text: str, ctx: ToolContext) -> str:
    """Append a line to the effects file: an external effect, not idempotent."""
    with (_work() / "effects.txt").open("a", encoding="utf-8") as handle:
        handle.write(f"{ctx.call_id}\t{ctx.run_id}\t{text}\n")
    _switch.reached("tool", ctx.call_id)
    return f"applied {text}"


NOTE = re.compile(r"^\d+\. ", re.MULTILINE)
MISSION = re.compile(r"^Mission: (.*)$", re.MULTILINE)


def answer(call: RecordedCall) -> dict[str, Any]:
    """The scripted model: its answer depends only on what it is shown, so a restarted process
    answers a replayed step as the dead one would have."""
    prompt, role = call.prompt, str(call.role)
    found = MISSION.search(prompt)
    mission = found.group(1) if found else "?"
    record = {"t": time.time(), "pid": os.getpid(), "mission": mission, "role": role}
    _append(_work() / "calls.jsonl", {**record, "notes": len(NOTE.findall(prompt))})
    _switch.reached("model", f"{mission} {role}")
    if role == "ceo":
        if "Result from" in prompt:
            again = ", second take" if "Do not do it" in prompt else ""
            return deliver(f"{mission}: done{again}")
        revised = " (revised)" if "asked you to revise" in prompt else ""
        return delegate(
            cto=f"Apply the change{revised}",
            marketcom=f"Announce it{revised}",
            support=f"Staff support{revised}",
        )
    if role == "support":
        return deliver("support staffed") if "The human answered" in prompt else ask("Hours?")
    return (
        deliver(f"{role} done") if "You called" in prompt else use(TOOL, text=f"{mission} {role}")
    )


def _install_hooks() -> None:
    """Wrap the store's decide and the checkpointer's writes (in this process only)."""
    global _hooked
    if _hooked:
        return
    _hooked = True
    decide = Store.decide

    async def decide_then_die(self: Store, proposal_id: str, **fields: Any) -> Proposal:
        decided = await decide(self, proposal_id, **fields)
        _switch.reached("decision", proposal_id)
        return decided

    Store.decide = decide_then_die  # type: ignore[method-assign]
    for name in ("put", "put_writes"):
        setattr(InlineSqliteSaver, name, _dying_write(name, getattr(InlineSqliteSaver, name)))


def _dying_write(name: str, write: Any) -> Any:
    def hooked(self: InlineSqliteSaver, *args: Any, **kwargs: Any) -> Any:
        if _switch.due("checkpoint"):
            # The INSERT runs; the process dies when the write would COMMIT.
            @contextlib.contextmanager
            def cursor_dying_at_commit(transaction: bool = True) -> Iterator[sqlite3.Cursor]:
                with self.lock:
                    yield self.conn.cursor()
                    _switch.die(name)

            self.cursor = cursor_dying_at_commit  # type: ignore[method-assign]
        return write(self, *args, **kwargs)

    return hooked


def make_app() -> FastAPI:
    """The server's app, configured by ``QAPTEN_CRASH_DIR`` and ``QAPTEN_TEST_KILL_AT``."""
    global _switch
    work = _work()
    _switch = KillSwitch(os.environ.get(KILL_ENV, ""), work / "kills.jsonl")
    _install_hooks()
    model = ScriptedChatModel({role: Endless(answer) for role in ROLES})
    db = f"sqlite:///{work / 'qapten.db'}"
    swarm = Swarm.from_yaml(work / "org" / "org.yaml", model=model, db=db, lease_ttl=LEASE_TTL)
    return create_app(swarm, ApiSettings.load())


def serve(port: int, env: dict[str, str], log: str) -> int:
    """One server life, in a process just forked by `fork_server`; returns its exit code."""
    import uvicorn

    try:
        with open(log, "a", encoding="utf-8") as out:
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.environ.update(env)
        uvicorn.run(make_app, factory=True, host="127.0.0.1", port=port, log_level="warning")
        return 0
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def fork_server() -> None:
    """Import everything once, then fork a new server process for each order read on stdin.

    A restart then costs a fork instead of a second of imports; the forked process shares no
    state with any earlier one (nothing here opens the database). Reports ``started PID`` and
    ``ended PID CODE`` on stdout; at the end of stdin it kills what is left and exits.
    """
    import uvicorn  # noqa: F401

    import qapten.web  # noqa: F401  (create_app imports it; loaded ahead here)

    servers: set[int] = set()

    def report(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    deadline = time.monotonic() + FORK_SERVER_LIMIT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sys.stdin], [], [], 0.02)
        while servers and (ended := os.waitpid(-1, os.WNOHANG))[0]:
            servers.discard(ended[0])
            report(f"ended {ended[0]} {os.waitstatus_to_exitcode(ended[1])}")
        if not ready:
            continue
        line = sys.stdin.readline()
        if not line:
            break
        order = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the new server process: it never comes back into this loop
            code = 1
            try:
                code = serve(**order)
            finally:
                os._exit(code)
        servers.add(pid)
        report(f"started {pid}")
    for pid in servers:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


class ForkServer:
    """The harness's handle on `fork_server`: start server processes, learn when they end."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        with (work / "logs" / "fork-server.log").open("w", encoding="utf-8") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.reliability.crash_harness", "--fork-server"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        self.ended: dict[int, int] = {}
        self._started: queue.Queue[int] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            word, *numbers = line.split()
            if word == "started":
                self._started.put(int(numbers[0]))
            elif word == "ended":
                self.ended[int(numbers[0])] = int(numbers[1])

    def start(self, port: int, env: dict[str, str], log: Path) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"port": port, "env": env, "log": str(log)}) + "\n")
        self.proc.stdin.flush()
        try:
            return self._started.get(timeout=60)
        except queue.Empty:
            raise HarnessError("the fork server started no server within 60 s") from None

    def wait(self, pid: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while pid not in self.ended:
            if time.monotonic() > deadline:
                raise HarnessError(f"server {pid} still running after {timeout} s")
            time.sleep(0.01)
        return self.ended[pid]

    def close(self) -> None:
        """Stop the fork server; it kills any server still running."""
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


# -- the org chart ---------------------------------------------------------------------------

ROLES = {
    "ceo": {"reports_to": None, "autonomy": {"plan": "approve", "deliverable": "approve"}},
    "cto": {"reports_to": "ceo", "tools": [TOOL], "autonomy": {"action": "approve"}},
    "marketcom": {"reports_to": "ceo", "tools": [TOOL], "autonomy": {"action": "auto"}},
    "support": {"reports_to": "ceo"},
}


def write_org(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    chart = {"name": "Crashtest", "roles": ROLES}
    (folder / "org.yaml").write_text(json.dumps(chart, indent=1), encoding="utf-8")
    for role in ROLES:
        (folder / f"{role}.md").write_text(f"You are the {role}. Be brief.\n", encoding="utf-8")


# -- the harness -----------------------------------------------------------------------------

ACTIVE = 4  # missions in flight while kill points remain
LIFE_LIMIT = 60.0  # seconds one server life may last before the harness calls it stuck
SETTLE_LIMIT = 20.0  # seconds a run left running by a death may take to move on by itself
RANDOM_DELAY = (0.05, 1.5)  # seconds after the order to serve, for random kills
COUNTS = {"model": (1, 8), "tool": (1, 3), "decision": (1, 4), "checkpoint": (1, 40)}
DECIDED_AS = {
    "approve": "approved",
    "edit": "edited",
    "revise": "revision_requested",
    "reject": "rejected",
    "answer": "answered",
}


class HarnessError(AssertionError):
    """The harness saw something go wrong while driving (a failed run, a stuck server…)."""


def decision_for(proposal: dict[str, Any], mission: int) -> tuple[str, dict[str, Any]]:
    """(who, body): the human's choice depends only on the proposal, so a retry repeats it."""
    who = "alice" if zlib.crc32(proposal["id"].encode()) % 2 else "bob"
    kind, payload = proposal["kind"], proposal["payload"]
    body: dict[str, Any] = {"decision": "approve"}
    if kind == "question":
        body = {"decision": "answer", "feedback": "9-17 CET"}
    elif kind == "plan" and mission % 3 == 0 and "(revised)" not in json.dumps(payload):
        body = {"decision": "revise", "feedback": "say that it is revised"}
    elif kind == "action" and mission % 2 == 0:
        body = {"decision": "edit", "payload": {"text": payload["text"] + " (edited)"}}
    elif kind == "deliverable" and mission % 5 == 0 and "second take" not in payload["result"]:
        body = {"decision": "reject", "feedback": "not yet"}
    return who, body


def kill_plan(kills: int, rng: random.Random) -> list[str]:
    """`kills` kill specs: a tenth random delays, the rest spread over the four points."""
    randoms = max(1, kills // 10)
    specs = [f"random:{rng.uniform(*RANDOM_DELAY):.3f}" for _ in range(randoms)]
    for i in range(kills - randoms):
        point = POINTS[i % len(POINTS)]
        specs.append(f"{point}:{rng.randint(*COUNTS[point])}")
    rng.shuffle(specs)
    return specs


@dataclass
class Figures:
    seed: int
    kills: Counter[str] = field(default_factory=Counter)
    runs_started: int = 0
    runs_done: int = 0
    runs_lost: int = 0
    proposals: int = 0
    proposals_lost: int = 0
    decisions: int = 0
    decisions_lost: int = 0
    in_doubt_recorded: int = 0
    effects: int = 0
    double_effects: int = 0
    interrupted: int = 0
    resumed: int = 0
    model_calls: int = 0
    model_cut: int = 0
    model_reasked: int = 0
    integrity: str = "not checked"
    checked: int = 0  # integrity checks passed after a kill
    restarts: list[float] = field(default_factory=list)  # seconds from order to first answer
    lives: list[float] = field(default_factory=list)  # seconds from order to death
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        kinds = ", ".join(f"{kind} {self.kills[kind]}" for kind in (*POINTS, "random"))
        return (
            f"crash: {sum(self.kills.values())} kill points ({kinds}); "
            f"runs {self.runs_done}/{self.runs_started} done; lost {self.runs_lost}; "
            f"proposals lost {self.proposals_lost}; decisions lost {self.decisions_lost}; "
            f"double effects {self.double_effects}; integrity {self.integrity}; "
            f"{self.seconds:.0f} s"
        )

    def details(self) -> str:
        restart = statistics.median(self.restarts or [0])
        return (
            f"crash details: seed {self.seed}; integrity_check ok after {self.checked} kills; "
            f"{self.proposals} proposals; {self.decisions} decisions, {self.in_doubt_recorded} "
            f"of them recorded though the answer died with the server; {self.effects} tool "
            f"effects, {self.interrupted} calls cut by a kill journaled interrupted and not "
            f"re-run; {self.resumed} runs left running by a kill moved on by themselves after "
            f"restart; {self.model_calls} model calls, {self.model_cut} asked again after a kill "
            f"cut them off, {self.model_reasked} asked again for a recorded proposal; restart "
            f"to first answer {restart:.2f} s (median); problems {len(self.problems)}"
        )


@dataclass
class Life:
    pid: int
    api: str
    spec: str
    kill_at: float | None
    log: Path


def auth(who: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who][0]}"}


class Harness:
    """Drives missions through server lives that end in SIGKILL, then checks the remains."""

    def __init__(self, work: Path, *, seed: int, active: int = ACTIVE) -> None:
        self.work, self.rng, self.active = work, random.Random(seed), active
        self.db = work / "qapten.db"
        self.figures = Figures(seed=seed)
        self.missions: dict[int, str | None] = {}  # number → run id (None: its start in doubt)
        self.mission_of: dict[str, int] = {}
        self.seen: dict[str, str] = {}  # proposal → payload hash, as listed by the API
        self.confirmed: dict[str, tuple[str, str]] = {}  # proposal → (status, by) the API told
        self.in_doubt: dict[str, tuple[str, str]] = {}  # decisions whose answer never came
        self.recorded: dict[str, tuple[str, str | None, str]] = {}  # from the DB after deaths
        self.watch: dict[str, float] = {}  # runs a death left running → when the restart answered
        self.tool_kills: set[str] = set()
        self.orphans: set[int] = set()  # missions whose start died with a server
        self.status: dict[str, str] = {}  # run → status, as last listed
        self.final = False
        self._lives = 0
        self._marks = 0  # lines of kills.jsonl already accounted for
        self._forks: ForkServer | None = None

    # -- processes ------------------------------------------------------------------------

    def _start_server(self, spec: str) -> Life:
        """A new server process on the database; `spec` arms its kill switch (or a random kill)."""
        assert self._forks is not None
        self._lives += 1
        point, _, value = spec.partition(":")
        port = free_port()
        log = self.work / "logs" / f"server-{self._lives}.log"
        pid = self._forks.start(port, {KILL_ENV: "" if point == "random" else spec}, log)
        kill_at = time.monotonic() + float(value) if point == "random" else None
        return Life(pid, f"http://127.0.0.1:{port}/api/v1", spec, kill_at, log)

    def _server_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QAPTEN_")}
        tokens = [
            {"name": who, "sha256": hashlib.sha256(token.encode()).hexdigest(), "scope": scope}
            for who, (token, scope) in TOKENS.items()
        ]
        # No rate limit: the harness polls as fast as the server answers.
        return env | {
            WORK_ENV: str(self.work),
            "QAPTEN_TOKENS": json.dumps(tokens),
            "QAPTEN_RATE_LIMIT": "off",
        }

    def _ended(self, life: Life) -> int | None:
        assert self._forks is not None
        return self._forks.ended.get(life.pid)

    def run(self, kills: int, plan: list[str] | None = None) -> Figures:
        """Drive the server through `plan` (default: `kill_plan(kills)`), then verify."""
        started = time.monotonic()
        (self.work / "logs").mkdir(parents=True, exist_ok=True)
        write_org(self.work / "org")
        plan = kill_plan(kills, self.rng) if plan is None else plan
        self._forks = ForkServer(self.work, self._server_env())
        life: Life | None = None
        try:
            for i, spec in enumerate([*plan, ""]):
                self.final = i == len(plan)
                life = self._start_server(spec)
                if self._live(life):
                    self._after_death(life)
                else:
                    os.kill(life.pid, signal.SIGTERM)
                    code = self._forks.wait(life.pid, timeout=30)
                    if code not in (0, -signal.SIGTERM):
                        raise HarnessError(f"the last server ended with {code}")
        finally:
            if life is not None and self._ended(life) is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(life.pid, signal.SIGKILL)
            self._forks.close()  # it kills any server still running, too
        self._verify()
        self.figures.seconds = time.monotonic() - started
        return self.figures

    # -- one server life ------------------------------------------------------------------

    def _live(self, life: Life) -> bool:
        """Drive until the server dies (True) or, in the last life, every run is done."""
        began = time.monotonic()
        answered = False
        with httpx.Client(base_url=life.api, headers=auth(), timeout=30) as client:
            while time.monotonic() - began < LIFE_LIMIT:
                if life.kill_at is not None and time.monotonic() >= life.kill_at:
                    if self._ended(life) is None:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(life.pid, signal.SIGKILL)
                    life.kill_at = None
                if self._ended(life) is not None:
                    self.figures.lives.append(time.monotonic() - began)
                    return True
                busy = False
                try:
                    if not answered:
                        answered = client.get("/healthz").status_code == 200
                        if answered:
                            self.watch = dict.fromkeys(self.watch, time.monotonic())
                            self.figures.restarts.append(time.monotonic() - began)
                    else:
                        busy = self._step(client)
                        if self.final and self._all_done():
                            self._check_tasks(client)
                            return False
                except httpx.TransportError:
                    pass  # the server died under the request, or is not up yet
                if not busy:
                    time.sleep(0.02)
        unfinished = {run: s for run, s in self.status.items() if s != "done"}
        raise HarnessError(
            f"server life {life.spec!r} not over after {LIFE_LIMIT} s; runs not done: "
            f"{unfinished}; watched: {list(self.watch)}; decisions in doubt: {self.in_doubt}"
        )

    def _step(self, client: httpx.Client) -> bool:
        status = self.status = self._runs(client)
        for run_id in list(self.watch):
            if status.get(run_id) != "running":
                self.figures.resumed += 1
                del self.watch[run_id]
            elif time.monotonic() - self.watch[run_id] > SETTLE_LIMIT:
                raise HarnessError(f"run {run_id} still running {SETTLE_LIMIT} s after restart")
        for proposal_id in list(self.in_doubt):
            self._settle_doubt(client, proposal_id)
        busy = False
        listed = _get(client, "/proposals", status="pending", limit=500)
        for proposal in reversed(listed["items"]):  # oldest first
            self.seen[proposal["id"]] = proposal["payload_hash"]
            run_id = proposal["run_id"]
            if run_id in self.watch or proposal["id"] in self.in_doubt:
                continue
            if run_id in self.mission_of:
                self._decide(client, proposal, self.mission_of[run_id])
                busy = True
        for number in sorted(self.orphans):  # starts that died with a server and left no run
            if self.missions[number] is None:
                self._start(client, number)
                busy = True
        self.orphans.clear()
        active = sum(status.get(run_id or "") != "done" for run_id in self.missions.values())
        while not self.final and active < self.active:
            self._start(client, len(self.missions) + 1)
            active += 1
            busy = True
        return busy

    def _runs(self, client: httpx.Client) -> dict[str, str]:
        status: dict[str, str] = {}
        for run in _get(client, "/runs", limit=500)["items"]:
            if run["status"] in ("failed", "cancelled"):
                raise HarnessError(f"run {run['id']} {run['status']}: {run['error']}")
            if run["id"] not in self.mission_of:  # started, but the answer died with a server
                number = int(run["mission"].rsplit(" ", 1)[-1])
                if self.missions.get(number, "") is not None:
                    raise HarnessError(f"a run nobody started, or started twice: {run}")
                self.missions[number] = run["id"]
                self.mission_of[run["id"]] = number
            status[run["id"]] = run["status"]
        return status

    def _start(self, client: httpx.Client, number: int) -> None:
        self.missions[number] = None
        started = client.post("/runs", json={"mission": f"crash mission {number}"})
        if started.status_code != 201:
            raise HarnessError(f"starting a run: {started.status_code} {started.text}")
        self.missions[number] = started.json()["id"]
        self.mission_of[started.json()["id"]] = number

    def _decide(self, client: httpx.Client, proposal: dict[str, Any], mission: int) -> None:
        who, body = decision_for(proposal, mission)
        wanted = (DECIDED_AS[body["decision"]], who)
        self.in_doubt[proposal["id"]] = wanted
        url = f"/proposals/{proposal['id']}/decision"
        reply = client.post(url, json=body, headers=auth(who))
        del self.in_doubt[proposal["id"]]
        if reply.status_code == 200:
            got = (reply.json()["status"], reply.json()["decided_by"])
            if got != wanted:
                raise HarnessError(f"decided {proposal['id']} as {wanted}, the API says {got}")
            self.confirmed[proposal["id"]] = wanted
        elif reply.status_code == 409:  # decided already: only by an earlier try of ours
            self.in_doubt[proposal["id"]] = wanted
            self._settle_doubt(client, proposal["id"])
        else:
            raise HarnessError(f"deciding {proposal['id']}: {reply.status_code} {reply.text}")

    def _settle_doubt(self, client: httpx.Client, proposal_id: str) -> None:
        """A decision sent to a server that died: recorded as sent, or not at all (send again)."""
        now = _get(client, f"/proposals/{proposal_id}")
        wanted = self.in_doubt.pop(proposal_id)
        if now["status"] == "pending":
            return
        if (now["status"], now["decided_by"]) != wanted:
            raise HarnessError(f"{proposal_id}: sent {wanted}, recorded {now['status']}")
        self.confirmed[proposal_id] = wanted
        self.figures.in_doubt_recorded += 1

    def _all_done(self) -> bool:
        if self.watch or self.in_doubt or None in self.missions.values():
            return False
        return all(status == "done" for status in self.status.values())

    def _check_tasks(self, client: httpx.Client) -> None:
        for run_id in self.mission_of:
            tasks = _get(client, f"/runs/{run_id}")["tasks"]
            if any(task["status"] != "done" for task in tasks):
                self.figures.problems.append(f"run {run_id} is done with tasks not done: {tasks}")

    # -- after a death --------------------------------------------------------------------

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as conn:
            yield conn

    def _after_death(self, life: Life) -> None:
        code, log = self._ended(life), life.log
        if code != -signal.SIGKILL:
            raise HarnessError(f"server exited with {code}, not SIGKILL:\n{_read(log)}")
        point = life.spec.partition(":")[0]
        marks = _records(self.work / "kills.jsonl")[self._marks :]  # what this life noted
        self._marks += len(marks)
        if any(m["pid"] != life.pid for m in marks):
            raise HarnessError(f"kill marks of another process: {marks}")
        if point == "random":
            if marks:
                raise HarnessError(f"a random-kill life died at a hook: {marks}")
        elif [m["point"] for m in marks] != [point]:
            raise HarnessError(f"life {life.spec!r} died with marks {marks}:\n{_read(log)}")
        elif point == "tool":
            self.tool_kills.add(marks[0]["detail"])
        self.figures.kills[point] += 1
        self.orphans = {number for number, run in self.missions.items() if run is None}
        with self._db() as conn:  # what the dead process left, before anyone touches it
            [(integrity,)] = conn.execute("PRAGMA integrity_check").fetchall()
            if integrity != "ok":
                raise HarnessError(f"integrity_check after {life.spec!r}: {integrity}")
            self.figures.checked += 1
            if not _has_tables(conn):
                # Killed before its schema transaction committed (a random kill early in the
                # first life): an empty database is right, unless something was acknowledged.
                if any(self.missions.values()) or self.recorded:
                    self.figures.problems.append(f"the tables are gone after {life.spec!r}")
                self.watch = {}
                return
            running = conn.execute("SELECT id FROM qapten_runs WHERE status = 'running'")
            self.watch = dict.fromkeys((run_id for (run_id,) in running), float("inf"))
            rows = conn.execute(
                "SELECT id, status, decided_by, payload_hash FROM qapten_proposals"
            ).fetchall()
        for proposal_id, status, by, digest in rows:
            before = self.recorded.get(proposal_id)
            if before is not None and before[1] is not None and before != (status, by, digest):
                self.figures.problems.append(f"{proposal_id} changed from {before} to {status}")
            self.recorded[proposal_id] = (status, by, digest)

    # -- the end --------------------------------------------------------------------------

    def _verify(self) -> None:
        fig, problems = self.figures, self.figures.problems
        with self._db() as conn:
            [(fig.integrity,)] = conn.execute("PRAGMA integrity_check").fetchall()
            runs = dict(conn.execute("SELECT id, status FROM qapten_runs").fetchall())
            proposals = {
                row[0]: row
                for row in conn.execute(
                    "SELECT p.id, p.status, p.decided_by, p.payload_hash, p.decided_payload,"
                    " p.step, p.role, p.created_at, r.mission FROM qapten_proposals p"
                    " JOIN qapten_runs r ON r.id = p.run_id"
                )
            }
            events = conn.execute("SELECT type, data FROM qapten_events").fetchall()
            journal = {
                call_id: (status, json.loads(args))
                for call_id, status, args in conn.execute(
                    "SELECT call_id, status, args FROM qapten_tool_calls"
                )
            }
        fig.runs_started = len(self.missions)
        fig.runs_done = sum(runs.get(run_id or "") == "done" for run_id in self.missions.values())
        fig.runs_lost = fig.runs_started - sum(run_id in runs for run_id in self.missions.values())
        if len(runs) != len(self.missions) or fig.runs_done != fig.runs_started:
            problems.append(f"{len(runs)} runs in the database for {len(self.missions)} missions")

        fig.proposals = len(proposals)
        lost = {p for p, digest in self.seen.items() if proposals.get(p, [None] * 4)[3] != digest}
        lost |= {p for p, (_, _, digest) in self.recorded.items() if p not in proposals}
        fig.proposals_lost = len(lost)
        decided = _decided_events(events)
        fig.decisions = len(self.confirmed)
        # Lost: a decision the API confirmed, or one seen in the database after a death, that
        # is not in the database now as it was (or whose event is missing).
        lost = {
            p
            for p, wanted in self.confirmed.items()
            if proposals.get(p, [None] * 3)[1:3] != wanted or decided.get(p) != wanted
        }
        lost |= {
            p
            for p, (status, by, digest) in self.recorded.items()
            if status != "pending"
            and tuple(proposals.get(p, [None] * 4)[1:4]) != (status, by, digest)
        }
        fig.decisions_lost = len(lost)
        for p, (_, status, by, *_) in proposals.items():
            if status == "pending" or (by != AUTO_DECIDER and p not in self.confirmed):
                problems.append(f"proposal {p}: {status} by {by}, not a decision of the harness")
        self._check_effects(journal, proposals, events)
        self._check_model(proposals)

    def _check_effects(
        self, journal: dict[str, tuple[str, Any]], proposals: dict[str, Any], events: list[Any]
    ) -> None:
        fig, problems = self.figures, self.figures.problems
        lines = [
            line.split("\t")
            for line in _read(self.work / "effects.txt").splitlines()
            if line.strip()
        ]
        applied = Counter(call_id for call_id, _, _ in lines)
        texts = {call_id: text for call_id, _, text in lines}
        fig.effects = len(lines)
        fig.double_effects = sum(n - 1 for n in applied.values())
        reported = {
            json.loads(data)["call_id"] for kind, data in events if kind == "tool.interrupted"
        }
        fig.interrupted = sum(status == "interrupted" for status, _ in journal.values())
        for call_id in applied.keys() - journal.keys():
            problems.append(f"effect {call_id} applied outside the tool journal")
        for call_id, (status, args) in journal.items():
            times = applied[call_id]
            approved = json.loads(proposals[call_id][4])
            if args != approved:
                problems.append(f"call {call_id} ran {args}, approved was {approved}")
            if status == "done" and (times != 1 or texts[call_id] != args["text"]):
                problems.append(f"call {call_id} done, its effect applied {times} times")
            elif status == "interrupted" and (times > 1 or call_id not in reported):
                problems.append(
                    f"call {call_id} interrupted: {times} effects, reported {call_id in reported}"
                )
            elif status not in ("done", "interrupted"):
                problems.append(f"call {call_id} left {status}")
        for call_id in self.tool_kills:
            if journal.get(call_id, ("missing",))[0] != "interrupted" or applied[call_id] != 1:
                problems.append(f"call {call_id} killed inside the tool: {journal.get(call_id)}")

    def _check_model(self, proposals: dict[str, Any]) -> None:
        """Every proposal came from one model call, and no call came once it was recorded."""
        fig = self.figures
        calls: dict[tuple[str, str], dict[int, list[tuple[float, int]]]] = defaultdict(dict)
        for call in _records(self.work / "calls.jsonl"):
            steps = calls[call["mission"], call["role"]]
            steps.setdefault(call["notes"], []).append((call["t"], call["pid"]))
            fig.model_calls += 1
        made: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
        for _, _, _, _, _, step, role, created, mission in proposals.values():
            made[mission, role].append((step, _epoch(created)))
        for key in calls.keys() | made.keys():
            asked = [calls[key][notes] for notes in sorted(calls.get(key, {}))]
            recorded = sorted(made.get(key, []))
            if len(asked) != len(recorded):
                fig.problems.append(f"{key}: {len(asked)} model steps, {len(recorded)} proposals")
                continue
            for tries, (_, created) in zip(asked, recorded, strict=True):
                fig.model_reasked += sum(t > created for t, _ in tries)
                fig.model_cut += sum(t < created for t, _ in tries) - 1
                if len({pid for _, pid in tries}) != len(tries):
                    fig.problems.append(f"{key}: the model asked twice in one process: {tries}")


def _get(client: httpx.Client, path: str, **params: Any) -> Any:
    reply = client.get(path, params=params)
    if reply.status_code != 200:
        raise HarnessError(f"GET {path}: {reply.status_code} {reply.text}")
    return reply.json()


def _decided_events(events: list[Any]) -> dict[str, tuple[str, str]]:
    decided = {}
    for kind, data in events:
        if kind == "proposal.decided":
            record = json.loads(data)
            decided[record["proposal_id"]] = (record["status"], record["by"])
    return decided


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _read(path).splitlines() if line.strip()]


def _has_tables(conn: sqlite3.Connection) -> bool:
    query = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'qapten_runs'"
    [(count,)] = conn.execute(query).fetchall()
    return bool(count)


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


def _epoch(stored: str) -> float:
    moment = datetime.fromisoformat(stored)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def run_harness(work: Path, *, kills: int, seed: int | None = None) -> Figures:
    """Run the whole harness in `work` (an empty folder); returns the figures."""
    seed = random.randrange(2**32) if seed is None else seed
    return Harness(work, seed=seed).run(kills)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kills", type=int, default=100, help="kill points (default 100)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the kill plan")
    parser.add_argument("--work", type=Path, default=None, help="folder (default: a temp one)")
    parser.add_argument("--fork-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fork_server:
        fork_server()
        return 0
    import tempfile

    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        figures = run_harness(work, kills=args.kills, seed=args.seed)
        print(figures.summary())
        print(figures.details())
        for problem in figures.problems:
            print(f"problem: {problem}")
    return 1 if figures.problems else 0


if __name__ == "__main__":
    # Run the imported module, not this __main__ copy: the tool and the hooks live there.
    from tests.reliability.crash_harness import main as _main

    sys.exit(_main())
