"""Tools named in test org charts as `tests.sample_tools:NAME`."""

from __future__ import annotations

from qapten import ToolContext


def shout(text: str, times: int = 1) -> str:
    """Repeat a text in capitals."""
    return " ".join([text.upper()] * times)


def note_in_workspace(name: str, ctx: ToolContext) -> str:
    """Leave a note file named after the call's idempotency key."""
    ctx.workspace.write_text(f"{name}.txt", ctx.call_id)
    return f"noted {name}"
