"""Show people what the models are doing: a Rich progress line per model call in flight.

A LangChain callback handler, so it sees every call of every role without the engine knowing
about screens: hand it to `Swarm(callbacks=[...])`. Small local models take seconds per answer;
a line that says "ceo is thinking… 4 s" is the difference between waiting and wondering.
"""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from qapten.local_model import EmbeddedModel
from qapten.testing import ROLE_METADATA_KEY


async def start_with_progress(embedded: EmbeddedModel, console: Console) -> None:
    """Start the embedded model with a progress line; say how long it took."""
    started = time.monotonic()
    with progress_bar(console) as progress:
        line = progress.add_task("starting the embedded model", total=None)
        await embedded.start(lambda step: progress.update(line, description=step))
    took = time.monotonic() - started
    console.print(f"[dim]embedded model ready in {took:.1f} s ({embedded.base_url})[/]")


def progress_bar(console: Console) -> Progress:
    """The progress display shared by model start-up and model calls."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(bar_width=24),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


class ModelProgress(AsyncCallbackHandler):
    """One progress line per model call in flight: which role, which task, for how long.

    The bar pulses (the length of an answer is not known in advance); when the call ends, the line
    gives way to a one-line summary with the time and tokens it took.
    """

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self._calls: dict[UUID, tuple[TaskID, str, float]] = {}

    async def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        meta = metadata or {}
        who = f"{meta.get(ROLE_METADATA_KEY, 'model')} ({meta.get('qapten_task', '?')})"
        line = self.progress.add_task(f"{escape(who)} is thinking", total=None)
        self._calls[run_id] = (line, who, time.monotonic())

    async def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        self._finish(run_id, _tokens(response))

    async def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._finish(run_id, None, failed=f"{type(error).__name__}")

    def _finish(self, run_id: UUID, tokens: int | None, failed: str = "") -> None:
        entry = self._calls.pop(run_id, None)
        if entry is None:
            return
        line, who, started = entry
        self.progress.remove_task(line)
        spent = f", {tokens} tokens" if tokens else ""
        outcome = f"failed ({failed})" if failed else "answered"
        took = time.monotonic() - started
        self.progress.console.print(f"[dim]{escape(who)} {outcome} in {took:.1f} s{spent}[/]")


def _tokens(response: LLMResult) -> int | None:
    for generations in response.generations:
        for generation in generations:
            usage = getattr(getattr(generation, "message", None), "usage_metadata", None)
            if usage:
                return int(usage["total_tokens"])
    return None
