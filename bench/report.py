"""The results of a bench run: rows, the terminal table and the Markdown page."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

START = "<!-- bench:results:start -->"
END = "<!-- bench:results:end -->"


@dataclass(frozen=True)
class Row:
    """One measured figure of the bench, against the issue's target."""

    id: str
    what: str
    figure: str
    target: str
    met: bool | None
    """None when the row only reports (no target to meet)."""
    numbers: dict[str, Any] = field(default_factory=dict)
    """The raw numbers behind `figure`, kept in the JSON output."""


def verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "report"}[met]


def print_table(rows: list[Row], console: Console) -> None:
    table = Table(title="Qapten benchmarks", show_lines=False)
    for name in ("id", "what", "measured", "target", ""):
        table.add_column(name)
    for row in rows:
        style = {True: "green", False: "bold red", None: "cyan"}[row.met]
        table.add_row(row.id, row.what, row.figure, row.target, f"[{style}]{verdict(row.met)}")
    console.print(table)


def markdown_table(rows: list[Row]) -> str:
    lines = ["| id | what | measured | target | |", "|---|---|---|---|---|"]
    for row in rows:
        cells = (row.id, row.what, row.figure, row.target, verdict(row.met))
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def write_markdown(path: Path, rows: list[Row], machine: str, command: str) -> None:
    """Put the results between the page's markers, leaving the rest of the page as it is."""
    block = "\n".join(
        [START, "", f"Measured with `{command}` on {machine}.", "", markdown_table(rows), "", END]
    )
    if path.exists():
        page = path.read_text(encoding="utf-8")
        if START in page and END in page:
            pattern = re.escape(START) + ".*?" + re.escape(END)
            path.write_text(re.sub(pattern, lambda _: block, page, flags=re.S), encoding="utf-8")
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# Benchmarks\n\n{block}\n", encoding="utf-8")


def write_json(path: Path, rows: list[Row], machine: str) -> None:
    data = {"machine": machine, "rows": [asdict(row) for row in rows]}
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
