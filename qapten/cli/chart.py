"""Commands that work on an org chart file, offline: init, validate, graph, schema."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from qapten.cli.common import OrgArgument, fail, load_chart
from qapten.orgchart import OrgChart

SCHEMA_FILE = "org.schema.json"
_HERE = Path(".")


def _schema_text() -> str:
    return json.dumps(OrgChart.json_schema(), indent=2) + "\n"


def init(
    folder: Annotated[Path, typer.Argument(help="Where to write the chart.")] = _HERE,
) -> None:
    """Write a small org chart (a lead and an assistant) with its prompts and schema."""
    templates = resources.files("qapten").joinpath("templates", "init")
    files = {
        entry.name: entry.read_text(encoding="utf-8")
        for entry in templates.iterdir()
        if entry.is_file()
    }
    files[SCHEMA_FILE] = _schema_text()
    existing = sorted(name for name in files if (folder / name).exists())
    if existing:
        fail(f"{', '.join(existing)} already in {folder}; not overwriting (choose a new folder)")
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in sorted(files.items()):
        (folder / name).write_text(text, encoding="utf-8")
    typer.echo(f"wrote {', '.join(sorted(files))} in {folder}")
    typer.echo(f"next: edit them, then run: qapten validate {folder / 'org.yaml'}")


def validate(org: OrgArgument) -> None:
    """Check an org chart; print each problem as FILE:LINE:COL: message."""
    chart = load_chart(org)
    typer.echo(f"ok: {len(chart.roles)} roles ({chart.name})")


def graph(org: OrgArgument) -> None:
    """Print the compiled LangGraph graph of an org chart as Mermaid."""
    from qapten.graph import build_graph  # LangGraph loads only for commands that need it

    compiled = build_graph(load_chart(org)).compile()
    typer.echo(compiled.get_graph().draw_mermaid(), nl=False)


def schema(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file, not stdout.")
    ] = None,
) -> None:
    """Print the JSON Schema of org charts, which editors use to check and complete the YAML."""
    text = _schema_text()
    if output is None:
        typer.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {output}")
