"""Tools named in test org charts as `tests.sample_tools:NAME`."""

from __future__ import annotations

import os
from pathlib import Path

from qapten import ToolContext


def shout(text: str, times: int = 1) -> str:
    """Repeat a text in capitals."""
    return " ".join([text.upper()] * times)


def note_in_workspace(name: str, ctx: ToolContext) -> str:
    """Leave a note file named after the call's idempotency key."""
    ctx.workspace.write_text(f"{name}.txt", ctx.call_id)
    return f"noted {name}"


def append_effect(text: str, ctx: ToolContext) -> str:
    """Append a line to the file that QAPTEN_TEST_EFFECTS names: an external effect that is not
    idempotent, so a test can count how often each call really ran."""
    path = Path(os.environ["QAPTEN_TEST_EFFECTS"])
    with path.open("a", encoding="utf-8") as handle:
        handle.write(f"{ctx.run_id} {ctx.call_id} {text}\n")
    return f"applied {text}"
