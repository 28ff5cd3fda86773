"""A tiny MCP server over stdio for the tests: a notes file, named by the environment.

Run with: NOTES_FILE=PATH python tests/mcp_server.py   (MCP over stdin and stdout)
     or:   NOTES_FILE=PATH python tests/mcp_server.py --http PORT   (streamable HTTP at /mcp)

Every call of ``add`` appends one line to NOTES_FILE, so a test can prove that an approved call
ran exactly once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mcp.server.fastmcp import FastMCP
from mcp.types import ToolAnnotations

server = FastMCP("notes", log_level="WARNING")


def _notes() -> Path:
    return Path(os.environ["NOTES_FILE"])


@server.tool()
def add(text: str, tags: list[str] | None = None) -> str:
    """Append a note to the notes file."""
    line = text if not tags else f"{text} [{', '.join(tags)}]"
    with _notes().open("a", encoding="utf-8") as notes:
        notes.write(line + "\n")
    return f"added note {_count()}: {line}"


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def count() -> str:
    """Count the notes."""
    return f"{_count()} notes"


@server.tool(annotations=ToolAnnotations(idempotentHint=True))
def clear(confirm: bool) -> str:
    """Remove every note."""
    if not confirm:
        msg = "clear needs confirm: true"
        raise ValueError(msg)
    _notes().write_text("", encoding="utf-8")
    return "cleared"


@server.tool()
def crash() -> str:
    """Stop the server at once, as a crash would."""
    print("notes server: crashing on purpose", file=sys.stderr, flush=True)
    os._exit(3)


def _count() -> int:
    path = _notes()
    return len(path.read_text(encoding="utf-8").splitlines()) if path.exists() else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--http"]:
        server.settings.host = "127.0.0.1"
        server.settings.port = int(sys.argv[2])
        server.run("streamable-http")
    else:
        server.run("stdio")
