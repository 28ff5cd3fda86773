"""Orchestrating a run from the terminal: a live view of the run, and a prompt per proposal.

`orchestrate` shows the task tree, the tokens spent per role and the tasks at work (Rich `Live` on
a terminal, plain lines in a pipe), prints each pending proposal in full and asks for a decision.
It returns when the run ends. Ctrl-C (or the end of input) raises `Paused` at the next wait, never
in the middle of a decision; the run stays in the database and resumes with `Swarm.resume`.

Input is read without blocking the event loop, so the run keeps advancing while a prompt waits,
and a proposal decided elsewhere meanwhile (web inbox, another terminal) ends its prompt.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from qapten.autopilot import AUTOPILOT, Autopilot, decide_automatically
from qapten.errors import (
    ConfigurationError,
    InvalidDecision,
    ProposalAlreadyDecided,
    RunNotFound,
)
from qapten.policy import ActKind
from qapten.progress import start_with_progress
from qapten.proposals import (
    ALLOWED_DECISIONS,
    Answer,
    Approve,
    Decision,
    Edit,
    Proposal,
    ProposalStatus,
    Reject,
    Revise,
)
from qapten.report import show_outcome
from qapten.store import FINISHED_RUN, Run
from qapten.swarm import Swarm
from qapten.terminal_io import (
    LineReader,
    Snapshot,
    View,
    on_interrupt,
    printable,
    render_proposal,
)

POLL_SECONDS = 0.25
"""How often the view, and a prompt's proposal, are read again from the store."""
PAUSED_EXIT_CODE = 130  # the shell's code for a program stopped by Ctrl-C

# Menu entries in display order: (decision, key, label with the key in brackets).
MENU = (
    ("approve", "a", "[a]pprove"),
    ("answer", "a", "[a]nswer"),
    ("reject", "r", "[r]eject"),
    ("revise", "v", "re[v]ise"),
    ("edit", "e", "[e]dit"),
    ("skip", "s", "[s]kip"),
)
DETAILS = {
    "reject": "why? (optional) > ",
    "revise": "what should change? (empty: back) > ",
    "answer": "your answer (empty: back) > ",
    "edit": "the payload as one line of JSON (empty: back) > ",
}


class Paused(KeyboardInterrupt):
    """The person stopped orchestrating (Ctrl-C, end of input); the run is left as it was.

    A `KeyboardInterrupt`, so that callers that handle Ctrl-C handle it, and no ``except
    Exception`` swallows it. Catch it inside the coroutine: escaping an asyncio task, a
    KeyboardInterrupt stops the event loop.
    """

    def __init__(self, run_id: str, reason: str) -> None:
        self.run_id = run_id
        self.reason = reason
        super().__init__(f"run {run_id} paused: {reason}")


def menu_for(kind: ActKind) -> tuple[dict[str, str], str]:
    """What may be typed (word or key → decision) for a proposal of this kind, and the menu."""
    entries = [e for e in MENU if e[0] in ALLOWED_DECISIONS[kind] | {"skip"}]
    choices = {word: decision for decision, key, _ in entries for word in (decision, key)}
    return choices, " / ".join(label for *_, label in entries)


class _Session:
    def __init__(
        self,
        swarm: Swarm,
        run_id: str,
        console: Console,
        pilot: Autopilot | None,
        by: str,
        reader: LineReader,
    ) -> None:
        self.swarm, self.run_id, self.console = swarm, run_id, console
        self.pilot, self.by = pilot, by
        self.reader = reader
        self.view = View()
        self.live = console.is_terminal and not console.is_dumb_terminal
        self.skipped: set[str] = set()
        self.interrupted = asyncio.Event()
        self._interrupt: asyncio.Task[Any] | None = None
        self._shown_board: object = None

    async def loop(self) -> Run:
        self._interrupt = asyncio.ensure_future(self.interrupted.wait())
        try:
            while True:
                self._check()
                snap = await self._refresh()
                step = self._next(snap)
                if step == "wait":
                    snap = await self._wait(lambda s: self._next(s) != "wait")
                    continue
                if step == "finished":
                    return snap.run
                if step == "pilot":
                    await self._autopilot()
                elif isinstance(step, Proposal):
                    self._show_board(snap)
                    await self._ask(step, snap)
        finally:
            self._interrupt.cancel()

    def _next(self, snap: Snapshot) -> Proposal | str:
        if snap.run.status in FINISHED_RUN:
            return "finished"
        pilot = self.pilot
        if pilot is not None and any(pilot.decision_for(self.swarm.chart, p) for p in snap.pending):
            return "pilot"
        fresh = [p for p in snap.pending if p.id not in self.skipped]
        if fresh:
            return fresh[0]
        if snap.pending and snap.run.status == "waiting":
            return snap.pending[0]  # nothing else will happen: back to the skipped ones
        return "wait"

    async def _refresh(self) -> Snapshot:
        swarm = self.swarm
        snap = Snapshot(
            run=await swarm.run(self.run_id),
            tasks=await swarm.tasks(self.run_id),
            tokens=await swarm.tokens(self.run_id),
            pending=await swarm.pending(self.run_id, settle=False),
        )
        for task in self.view.update(snap):
            if not self.live:  # in a pipe, progress is one line per change
                self.console.print(Text(f"· {task['role']} {task['id']} {task['status']}"))
        return snap

    def _check(self) -> None:
        if self.interrupted.is_set():
            self.console.print()
            raise Paused(self.run_id, "interrupted")

    async def _wait(self, ready: Callable[[Snapshot], bool]) -> Snapshot:
        """Show the live view until `ready` holds for a fresh snapshot."""
        with self._live():
            while True:
                assert self._interrupt is not None
                await asyncio.wait({self._interrupt}, timeout=POLL_SECONDS)
                self._check()
                snap = await self._refresh()
                if ready(snap):
                    return snap

    @contextmanager
    def _live(self) -> Iterator[None]:
        if not self.live:
            yield
            return
        render = lambda: self.view.render(live=True, skipped=len(self.skipped))  # noqa: E731
        with Live(get_renderable=render, console=self.console, transient=True):
            yield

    def _show_board(self, snap: Snapshot) -> None:
        board = [(t["id"], t["status"]) for t in snap.tasks]
        if board != self._shown_board:
            self._shown_board = board
            self.console.print(self.view.render(skipped=len(self.skipped)))

    async def _autopilot(self) -> None:
        assert self.pilot is not None
        # Let the steps in flight settle first, as `decide_automatically` would, but watching.
        idle = asyncio.ensure_future(self.swarm.idle(self.run_id))
        try:
            snap = await self._wait(lambda _: idle.done())
        finally:
            idle.cancel()
        chosen = [p for p in snap.pending if self.pilot.decision_for(self.swarm.chart, p)]
        await decide_automatically(self.swarm, self.run_id, self.pilot)
        for proposal in chosen:
            done = await self.swarm.proposal(proposal.id)
            if done.decided_by == AUTOPILOT:
                status = done.status.value.replace("_", " ")
                who = f"{done.role}'s {done.kind.value}"
                self.console.print(Text(f"autopilot: {status} {who}: {printable(done.title)}"))

    async def _ask(self, proposal: Proposal, snap: Snapshot) -> None:
        """Show one proposal in full and take the person's decision on it."""
        self.skipped.discard(proposal.id)
        task = next((t for t in snap.tasks if t["id"] == proposal.task_id), None)
        self.console.print(render_proposal(proposal, task))
        choices, menu = menu_for(proposal.kind)
        choice: str | None = None
        while True:
            if choice is None:  # (back) at the menu
                word = await self._input(menu + " > ", proposal)
                if word is None:
                    return
                if (choice := choices.get(word.lower())) is None:
                    self.console.print(Text(f"choose one of: {menu}"))
                    continue
            if choice == "skip":
                self.skipped.add(proposal.id)
                self.console.print(Text(f"skipped {proposal.id}: it stays pending"))
                return
            text = ""
            if choice != "approve":
                if choice == "edit":
                    now = printable(json.dumps(proposal.payload, ensure_ascii=False))
                    self.console.print(Text(f"now: {now}", style="dim"))
                typed = await self._input(DETAILS[choice], proposal)
                if typed is None:
                    return
                text = typed
            decision = self._decision(choice, text)
            if decision is not None:
                try:
                    decided = await self.swarm.decide(proposal.id, decision, by=self.by)
                except ProposalAlreadyDecided as exc:
                    self._already(exc.status, exc.decided_by)
                    return
                except InvalidDecision as exc:
                    self.console.print(Text(f"not accepted: {exc}", style="red"))
                else:
                    status = decided.status.value.replace("_", " ")
                    self.console.print(Text(status, style="green"))
                    return
            # A bad payload is asked for again; anything else empty or refused: the menu.
            choice = "edit" if choice == "edit" and text else None

    def _decision(self, choice: str, text: str) -> Decision | None:
        """The decision typed; None to ask again (a refused payload says why)."""
        if choice in ("approve", "reject"):
            return Approve() if choice == "approve" else Reject(feedback=text)
        if not text:
            return None
        if choice != "edit":
            return Revise(feedback=text) if choice == "revise" else Answer(text=text)
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            problem = f"not valid JSON ({exc})"
        else:
            if isinstance(payload, dict):
                return Edit(payload=payload)
            problem = "the payload must be a JSON object {...}"
        self.console.print(Text(f"not accepted: {problem}", style="red"))
        return None

    async def _input(self, prompt: str, proposal: Proposal) -> str | None:
        """A typed line; None when the proposal was decided elsewhere meanwhile."""
        self.console.print(Text(prompt, style="bold"), end="")
        read = asyncio.ensure_future(self.reader.readline())
        try:
            while True:
                assert self._interrupt is not None
                await asyncio.wait(
                    {read, self._interrupt},
                    timeout=POLL_SECONDS * 2,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                self._check()
                if read.done():
                    line = read.result()
                    if line is None:
                        self.console.print()
                        raise Paused(self.run_id, "end of input")
                    if not self.reader.is_tty:
                        self.console.print(Text(line))  # a pipe does not echo: keep the log whole
                    return line.strip()
                current = await self.swarm.proposal(proposal.id)
                if current.status is not ProposalStatus.PENDING:
                    self.console.print()
                    self.reader.discard()
                    self._already(current.status.value, current.decided_by)
                    return None
        finally:
            read.cancel()

    def _already(self, status: str, by: str | None) -> None:
        who = f" by {by}" if by else ""
        self.console.print(Text(f"already {status.replace('_', ' ')}{who}", style="yellow"))


async def orchestrate(
    swarm: Swarm,
    run_id: str,
    *,
    console: Console,
    pilot: Autopilot | None = None,
    by: str = "terminal",
    reader: LineReader | None = None,
) -> Run:
    """Show the run and ask for every decision it needs until it ends; return the ended run.

    `pilot` takes the decisions it may (``Autopilot()``: approve-level acts); the rest are asked.
    `by` is recorded as the decider. Raises `Paused` on Ctrl-C or at the end of input; Ctrl-C is
    this function's while it runs (in the main thread), and a decision is never cut in half.
    """
    session = _Session(swarm, run_id, console, pilot, by, reader or LineReader())
    with on_interrupt(session.interrupted):
        return await session.loop()


async def close_gently(swarm: Swarm, *, console: Console) -> None:
    """Close `swarm` when its steps in flight end, as a process ends; Ctrl-C cuts them short.

    Cutting is safe: runs are durable, and a step cut in the middle is redone on resume. It
    cancels every other task of the event loop, so call it only when the process is ending.
    """
    idle = asyncio.ensure_future(swarm.idle())
    stop = asyncio.Event()
    with on_interrupt(stop):
        waiter = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({idle, waiter}, timeout=POLL_SECONDS)
        if not done:
            console.print(Text("finishing the step in flight… (Ctrl-C again: stop it now)"))
            await asyncio.wait({idle, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not idle.done():
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
    await swarm.close()


async def run_in_terminal(
    swarm: Swarm,
    *,
    mission: str | None,
    resume: str | None,
    console: Console,
    pilot: Autopilot | None,
    resume_command: Callable[[str], str],
) -> int:
    """The body of ``qapten run``: start `mission` or resume the run `resume`, orchestrate it.

    Returns the exit code: 0 done, 1 failed or cancelled, `PAUSED_EXIT_CODE` when paused
    (`resume_command(run_id)` is shown to continue). Raises `QaptenError` for a user's mistake:
    an unknown run, a run of another org chart, a database that cannot be opened.
    """
    try:
        if swarm.embedded is not None:  # seconds to start: show it (the swarm shares it)
            await start_with_progress(swarm.embedded, console)
        await swarm.open()  # a database it cannot open is a ConfigurationError
        if resume is None:
            run = await swarm.start(mission or "")
            console.print(Text(f"run {run.id} started: {printable(run.mission)}", style="bold"))
        else:
            run = await _resumable(swarm, resume)
            if run.status == "failed":  # e.g. its model server was down: take it up again
                await swarm.retry(run.id, by="terminal")
                how = "retried"
            else:
                await swarm.resume(run.id)
                how = "resumed"
            console.print(Text(f"run {run.id} {how}: {printable(run.mission)}", style="bold"))
        try:
            ended = await orchestrate(swarm, run.id, console=console, pilot=pilot)
        except Paused as exc:
            hint = f"paused ({exc.reason}): resume with {resume_command(run.id)}"
            console.print(Text(hint), soft_wrap=True)  # whole, to copy and paste
            await close_gently(swarm, console=console)
            return PAUSED_EXIT_CODE
        await show_outcome(swarm, ended, console)
        return 0 if ended.status == "done" else 1
    finally:
        await swarm.close()
        if swarm.embedded is not None:
            await swarm.embedded.stop()


async def _resumable(swarm: Swarm, run_id: str) -> Run:
    try:
        run = await swarm.run(run_id)
    except RunNotFound:
        msg = (
            f"no run with id {run_id!r} in {swarm.db} (use the --data-dir or --db it started with)"
        )
        raise RunNotFound(msg) from None
    if run.org != swarm.chart.name:
        msg = f"run {run_id} belongs to the org chart {run.org!r}, not {swarm.chart.name!r}"
        raise ConfigurationError(msg)
    return run
