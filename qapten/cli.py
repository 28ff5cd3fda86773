"""The `qapten` command line: one function per command.

Exit codes: 0 when all went well, 2 for a user's mistake (an invalid chart, a missing file, a file
that would be overwritten). A user's mistake is reported in one line per problem, never as a
traceback.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from qapten.errors import OrgChartError
from qapten.orgchart import OrgChart

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Qapten: a company of AI role agents that proposes while a human orchestrates.",
)

SCHEMA_FILE = "org.schema.json"
_HERE = Path(".")


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _schema_text() -> str:
    return json.dumps(OrgChart.json_schema(), indent=2) + "\n"


def _load(org: Path) -> OrgChart:
    """The chart at `org`, or exit 2 with each problem as FILE:LINE:COL: message."""
    try:
        return OrgChart.from_file(org)
    except OSError as exc:
        _fail(f"cannot read {org}: {exc.strerror or exc}")
    except OrgChartError as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        raise typer.Exit(2) from None


OrgArgument = Annotated[Path, typer.Argument(help="The org chart, e.g. agents/org.yaml.")]


@app.command()
def validate(org: OrgArgument) -> None:
    """Check an org chart; print each problem as FILE:LINE:COL: message."""
    chart = _load(org)
    typer.echo(f"ok: {len(chart.roles)} roles ({chart.name})")


@app.command()
def graph(org: OrgArgument) -> None:
    """Print the compiled LangGraph graph of an org chart as Mermaid."""
    from qapten.graph import build_graph  # LangGraph loads only for commands that need it

    compiled = build_graph(_load(org)).compile()
    typer.echo(compiled.get_graph().draw_mermaid(), nl=False)


@app.command()
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


@app.command()
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
        _fail(f"{', '.join(existing)} already in {folder}; not overwriting (choose a new folder)")
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in sorted(files.items()):
        (folder / name).write_text(text, encoding="utf-8")
    typer.echo(f"wrote {', '.join(sorted(files))} in {folder}")
    typer.echo(f"next: edit them, then run: qapten validate {folder / 'org.yaml'}")
