"""The terminal's input and output for `qapten.terminal`.

Input: lines read without blocking the event loop (`LineReader`), and Ctrl-C as an event
(`on_interrupt`). Output: the live view of a run, a proposal in full, how the run ended. Agent
text is shown as plain text, never as Rich markup, and with control characters escaped: a model's
output must not move the cursor or recolour the terminal.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.json import JSON
from rich.panel import Panel
from rich.spinner import Spinner
from rich.text import Text

from qapten.acts import DELEGATE
from qapten.board import Task
from qapten.policy import ActKind
from qapten.proposals import Proposal
from qapten.report import task_tree
from qapten.store import Run

BUSY = ("thinking", "acting")


class LineReader:
    """Lines from a file descriptor (stdin by default) that never block the event loop.

    A reader callback on the descriptor, not a thread: a thread blocked in ``input()`` cannot be
    cancelled and would keep the process alive after Ctrl-C.
    """

    def __init__(self, fd: int | None = None) -> None:
        self.fd = sys.stdin.fileno() if fd is None else fd
        self.is_tty = os.isatty(self.fd)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._eof = False

    async def readline(self) -> str | None:
        """The next line without its newline; None at the end of input."""
        while "\n" not in self._buffer and not self._eof:
            self._take(await self._read())
        if "\n" in self._buffer:
            line, _, self._buffer = self._buffer.partition("\n")
            return line.removesuffix("\r")
        line, self._buffer = self._buffer, ""
        return line or None

    def discard(self) -> None:
        """Forget what was typed ahead: it was meant for a prompt that is gone."""
        self._buffer = ""
        if self.is_tty:
            import termios

            with suppress(termios.error):
                termios.tcflush(self.fd, termios.TCIFLUSH)

    def _take(self, data: bytes) -> None:
        self._eof = not data
        self._buffer += self._decoder.decode(data, final=self._eof)

    async def _read(self) -> bytes:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        try:
            loop.add_reader(self.fd, lambda: None if ready.done() else ready.set_result(None))
        except (NotImplementedError, PermissionError):
            # A regular file (epoll refuses it) never blocks for long; nor does a closed pipe.
            return await asyncio.to_thread(os.read, self.fd, 4096)
        try:
            while True:
                await ready
                try:
                    return os.read(self.fd, 4096)
                except BlockingIOError:  # woken, but someone else read it first
                    ready = loop.create_future()
        finally:
            loop.remove_reader(self.fd)


@contextmanager
def on_interrupt(event: asyncio.Event) -> Iterator[None]:
    """Ctrl-C sets `event` (instead of raising anywhere) while inside; restored afterwards."""
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGINT)
    try:
        loop.add_signal_handler(signal.SIGINT, event.set)
    except (NotImplementedError, RuntimeError, ValueError):
        installed = False  # not the main thread, or no signals here: Ctrl-C stays as it was
    else:
        installed = True
    try:
        yield
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGINT)
            if previous is not None:  # e.g. asyncio.run's own handler
                signal.signal(signal.SIGINT, previous)


@dataclass(frozen=True)
class Snapshot:
    """What the view shows, read from the store in one go."""

    run: Run
    tasks: list[Task]
    tokens: dict[str, int]
    pending: list[Proposal]


class View:
    """Renders snapshots; remembers since when each task has been busy, and its spinner."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self._since: dict[str, tuple[str, float]] = {}
        self._spinners: dict[str, Spinner] = {}

    def update(self, snapshot: Snapshot) -> list[Task]:
        """Take a new snapshot; returns the tasks whose status changed."""
        changed = []
        for task in snapshot.tasks:
            if self._since.get(task["id"], ("", 0.0))[0] != task["status"]:
                self._since[task["id"]] = (task["status"], time.monotonic())
                changed.append(task)
        self.snapshot = snapshot  # one assignment: Live's refresh thread reads it
        return changed

    def render(self, *, live: bool = False, skipped: int = 0) -> RenderableType:
        snap = self.snapshot
        if snap is None:
            return Text("starting…")
        title = f"run {snap.run.id} ({snap.run.status}): {snap.run.mission}"
        parts: list[RenderableType] = [task_tree(snap.tasks, title=title)]
        for task in snap.tasks:
            if task["status"] not in BUSY:
                continue
            seconds = time.monotonic() - self._since.get(task["id"], ("", time.monotonic()))[1]
            line = f"{task['role']} {task['id']} {task['status']} {seconds:.0f}s"
            if live:
                spinner = self._spinners.setdefault(task["id"], Spinner("dots"))
                spinner.update(text=Text(line))
                parts.append(spinner)
            else:
                parts.append(Text(f"… {line}"))
        tokens = " · ".join(f"{role} {n:,}" for role, n in sorted(snap.tokens.items()))
        total = sum(snap.tokens.values())
        footer = f"tokens: {tokens + ' · ' if tokens else ''}total {total:,}"
        footer += f"   pending proposals: {len(snap.pending)}"
        footer += f" ({skipped} skipped)" if skipped else ""
        parts.append(Text(footer, style="dim"))
        return Group(*parts)


def printable(text: str) -> str:
    """`text` safe for a terminal: control characters (an agent wrote it) become \\uXXXX."""
    return "".join(ch if ch.isprintable() or ch in "\n\t" else f"\\u{ord(ch):04x}" for ch in text)


def render_proposal(proposal: Proposal, task: Task | None = None) -> RenderableType:
    """A proposal in full: who, for which task, and exactly what would be done."""
    payload = proposal.payload
    head = Text(printable(proposal.title), style="bold")
    lines: list[RenderableType] = [head]
    if task is not None:
        lines.append(Text(f"task {task['id']}: {printable(task['brief'])}"))
    lines.append(Text(f"act: {printable(proposal.act)}"))
    lines.append(Text(""))
    if proposal.act == DELEGATE and isinstance(payload.get("tasks"), list):
        for item in payload["tasks"]:
            lines.append(
                Text(f"→ {printable(str(item.get('to')))}: {printable(str(item.get('brief')))}")
            )
    elif proposal.kind is ActKind.DELIVERABLE and isinstance(payload.get("result"), str):
        lines.append(Text(printable(payload["result"])))
    elif proposal.kind is ActKind.QUESTION and isinstance(payload.get("question"), str):
        lines.append(Text(printable(payload["question"]), style="bold"))
    else:  # a tool call: its exact arguments
        lines.append(JSON(printable(json.dumps(payload, indent=2, ensure_ascii=False))))
    title = f"{proposal.kind.value} proposal {proposal.id} · {proposal.role}"
    return Panel(
        Group(*lines),
        title=printable(title),
        title_align="left",
        border_style="yellow",
        expand=False,
    )
