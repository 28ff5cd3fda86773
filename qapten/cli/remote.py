"""Clients of a running server: inbox, decide.

The server is `--url` or QAPTEN_URL; the token comes from QAPTEN_TOKEN, never from the command
line, where other users of the machine could read it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from qapten.cli.common import fail

if TYPE_CHECKING:
    from qapten.client import QaptenClient

DEFAULT_URL = "http://127.0.0.1:8000"

UrlOption = Annotated[
    str, typer.Option(envvar="QAPTEN_URL", help="The server; the token comes from QAPTEN_TOKEN.")
]


class DecisionName(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    REVISE = "revise"
    EDIT = "edit"
    ANSWER = "answer"


@contextmanager
def _client(url: str) -> Iterator[QaptenClient]:
    """A client of the server at `url`; its errors become one line and their exit code."""
    from qapten.client import ClientError, QaptenClient

    try:
        with QaptenClient(url, os.environ.get("QAPTEN_TOKEN")) as client:
            yield client
    except ClientError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(exc.exit_code) from None


def inbox(
    url: UrlOption = DEFAULT_URL,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not a table.")] = False,
) -> None:
    """List the proposals waiting for a human on a running server, newest first."""
    with _client(url) as client:
        proposals = client.pending()
    if as_json:
        typer.echo(json.dumps([p.model_dump(mode="json") for p in proposals], indent=2))
        return
    if not proposals:
        typer.echo("no pending proposals")
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table("id", "role", "kind", "title", "run", title=f"{len(proposals)} pending")
    for p in proposals:
        # An agent wrote the title: show it as plain text, never as Rich markup or as terminal
        # control sequences.
        cells = (p.id, p.role, p.kind, p.title, p.run_id)
        table.add_row(
            *(Text("".join(ch if ch.isprintable() else " " for ch in cell)) for cell in cells)
        )
    Console().print(table)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"--payload is not valid JSON: {exc}")
    if not isinstance(value, dict):
        fail(f"--payload must be a JSON object ({{...}}), not {type(value).__name__}")
    return value


def decide(
    proposal_id: Annotated[str, typer.Argument(metavar="ID", help="The proposal's id.")],
    decision: Annotated[DecisionName, typer.Argument(case_sensitive=False)],
    feedback: Annotated[
        str | None, typer.Option(help="Why (reject), what to change (revise), the answer.")
    ] = None,
    payload: Annotated[
        str | None, typer.Option(help="The edited payload as a JSON object (edit).")
    ] = None,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Approve, reject, revise, edit or answer a proposal on a running server."""
    edited = None if payload is None else _json_object(payload)
    with _client(url) as client:
        decided = client.decide(proposal_id, decision.value, feedback=feedback, payload=edited)
    typer.echo(f"{decided.status.replace('_', ' ')} by {decided.decided_by}")
