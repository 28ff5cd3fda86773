"""The `qapten` command line: one function per command.

Exit codes: 0 when all went well, 2 for a user's mistake (an invalid chart, a missing file, a file
that would be overwritten, a bad token), 1 when something else failed (a server that cannot be
reached, a proposal someone decided first). A problem is reported in one line, never as a
traceback.

`serve` runs the HTTP API and the web inbox; `inbox` and `decide` are clients of a running server
(`--url` or QAPTEN_URL, the token from QAPTEN_TOKEN: never on the command line, where other users
of the machine could read it).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import os
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
import yaml

from qapten.errors import OrgChartError, QaptenError
from qapten.orgchart import OrgChart

if TYPE_CHECKING:
    import uvicorn
    from langchain_core.language_models import BaseChatModel

    from qapten.api.settings import ApiSettings
    from qapten.client import QaptenClient
    from qapten.swarm import Swarm

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Qapten: a company of AI role agents that proposes while a human orchestrates.",
)

SCHEMA_FILE = "org.schema.json"
ADMIN_TOKEN_FILE = "admin-token"
DEFAULT_URL = "http://127.0.0.1:8000"
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


@app.command("run")
def run_command(
    org: OrgArgument,
    mission: Annotated[str | None, typer.Option(help="What the company should achieve.")] = None,
    resume: Annotated[
        str | None, typer.Option(metavar="RUN_ID", help="Continue a paused run instead.")
    ] = None,
    auto_approve: Annotated[
        bool,
        typer.Option(
            "--auto-approve", help="Approve approve-level acts; ask only for human-level ones."
        ),
    ] = False,
    data_dir: Annotated[
        Path, typer.Option(envvar="QAPTEN_DATA_DIR", help="Database and workspaces, as serve's.")
    ] = Path(".qapten"),
    db: Annotated[
        str | None, typer.Option(help="Database URL.", show_default="sqlite:///DATA_DIR/qapten.db")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(envvar="QAPTEN_MODEL", help="local, openai:NAME or scripted:FILE.json."),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(envvar="QAPTEN_BASE_URL", help="OpenAI-compatible server, for openai:NAME."),
    ] = None,
) -> None:
    """Give the company a mission and orchestrate it here, deciding each proposal as it comes.

    Ctrl-C pauses (exit 130): the run waits in the database for --resume RUN_ID. Exit 0 when the
    run is done, 1 when it failed or was cancelled.
    """
    import shlex

    from rich.console import Console

    from qapten.autopilot import Autopilot
    from qapten.swarm import Swarm
    from qapten.terminal import run_in_terminal

    if (mission is None) == (resume is None):
        _fail("give --mission TEXT for a new run or --resume RUN_ID for a paused one (not both)")
    if mission is not None and not mission.strip():
        _fail("--mission is empty: say what the company should achieve")
    chart = _load(org)
    chosen_model = _chat_model(model, base_url)
    try:
        swarm = Swarm(
            chart,
            model=chosen_model,
            db=db or f"sqlite:///{data_dir / 'qapten.db'}",
            workspaces=data_dir / "workspaces",
        )
    except QaptenError as exc:
        _fail(str(exc) if chosen_model else f"{exc} (or choose one with --model)")
    try:  # only once every mistake above is ruled out
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"cannot use the data directory {data_dir}: {exc.strerror or exc}")
    # The options that reach this run again, for the "resume with" line printed on Ctrl-C.
    where = None if data_dir == Path(".qapten") else str(data_dir)
    given = {"--data-dir": where, "--db": db, "--model": model, "--base-url": base_url}
    again = [f"{flag}={value}" for flag, value in given.items() if value]
    again += ["--auto-approve"] if auto_approve else []

    def resume_command(run_id: str) -> str:
        return shlex.join(["qapten", "run", str(org), "--resume", run_id, *again])

    try:
        code = asyncio.run(
            run_in_terminal(
                swarm,
                mission=mission,
                resume=resume,
                console=Console(),
                pilot=Autopilot() if auto_approve else None,
                resume_command=resume_command,
            )
        )
    except QaptenError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:  # before the run's prompts took Ctrl-C over, or after
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    raise typer.Exit(code)


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


# -- serve --------------------------------------------------------------------------------------


def _settings(settings_file: Path | None) -> ApiSettings:
    from pydantic import ValidationError

    from qapten.api.settings import ApiSettings

    where = settings_file or "the environment"
    try:
        return ApiSettings.load(settings_file)
    except OSError as exc:
        _fail(f"cannot read {settings_file}: {exc.strerror or exc}")
    except yaml.YAMLError as exc:
        _fail(f"{settings_file}: not valid YAML: {' '.join(str(exc).split())}")
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        _fail(f"settings from {where}: {problems}")
    except QaptenError as exc:
        _fail(str(exc))


def _chat_model(spec: str | None, base_url: str | None) -> BaseChatModel | None:
    """The model of `--model` (None: the org chart's own), or exit 2 naming the problem."""
    from pydantic import ValidationError

    from qapten.models import ModelRef, chat_model

    if spec is None:
        if base_url is not None:
            _fail("--base-url needs --model openai:NAME")
        return None
    try:
        ref = ModelRef.parse(spec)
        if base_url is not None:
            ref = ModelRef.parse({**ref.model_dump(exclude_none=True), "base_url": base_url})
        return chat_model(ref)
    except ValidationError as exc:
        _fail(f"--model {spec}: {exc.errors()[0]['msg']}")
    except (ValueError, QaptenError) as exc:
        _fail(f"--model {spec}: {exc}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _admin_token(data_dir: Path) -> tuple[str, bool]:
    """The admin token kept in `data_dir`, made on first start; True when just made."""
    path = data_dir / ADMIN_TOKEN_FILE
    try:
        # Mode 0600 from creation on: the token is never readable by others, even briefly.
        # O_EXCL: a token already there (or written by a server starting alongside) is kept.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        kept = path.read_text(encoding="utf-8").strip()
        if not kept:
            _fail(f"{path} is empty: delete it, and a new admin token is made at next start")
        return kept, False
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    return token, True


@app.command()
def serve(
    org: OrgArgument,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Database, workspaces and admin token.", show_default=".qapten"),
    ] = None,
    db: Annotated[
        str | None, typer.Option(help="Database URL.", show_default="sqlite:///DATA_DIR/qapten.db")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            envvar="QAPTEN_MODEL",
            help="local, openai:NAME or scripted:FILE.json; overrides the chart's model.",
        ),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(envvar="QAPTEN_BASE_URL", help="OpenAI-compatible server, for openai:NAME."),
    ] = None,
    settings_file: Annotated[
        Path | None,
        typer.Option("--settings", envvar="QAPTEN_SETTINGS", help="YAML settings file (tokens)."),
    ] = None,
) -> None:
    """Serve the HTTP API and the web inbox for an org chart."""
    from pydantic import SecretStr
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    from qapten.swarm import Swarm

    settings = _settings(settings_file)
    data_dir = data_dir or settings.data_dir
    if not settings.all_tokens() and not _is_loopback(host):
        _fail(
            f"refusing to listen on {host} without configured tokens: anyone who can reach it "
            "could decide; set QAPTEN_ADMIN_TOKEN or tokens in --settings (see 'qapten token')"
        )
    chart = _load(org)
    chosen_model = _chat_model(model, base_url)
    db = db or f"sqlite:///{data_dir / 'qapten.db'}"
    try:
        shown_db = make_url(db).render_as_string(hide_password=True)  # no password on screen
    except ArgumentError:
        _fail(f"--db {db!r} is not a database URL: use sqlite:///FILE")
    try:
        swarm = Swarm(chart, model=chosen_model, db=db, workspaces=data_dir / "workspaces")
    except QaptenError as exc:
        _fail(str(exc) if chosen_model else f"{exc} (or choose one with --model)")
    # Every mistake above is reported before anything is written.
    url = f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
    notes = []
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not settings.all_tokens():
            token, created = _admin_token(data_dir)
            settings = settings.model_copy(update={"admin_token": SecretStr(token)})
            where = data_dir / ADMIN_TOKEN_FILE
            notes = [f"admin token: in {where}"]
            if created:
                notes = [f"admin token (shown once; kept in {where}): {token}"]
                notes.append(f"inbox: {url}#token={token}")
    except OSError as exc:
        _fail(f"cannot use the data directory {data_dir}: {exc.strerror or exc}")

    import uvicorn

    from qapten.api import create_app

    settings = settings.model_copy(update={"data_dir": data_dir})
    web_app = create_app(swarm, settings)
    server = uvicorn.Server(uvicorn.Config(web_app, host=host, port=port, log_level="info"))
    typer.echo(f"Qapten serving {chart.name} ({len(chart.roles)} roles) on {url}")
    for note in notes:
        typer.echo(note)
    asyncio.run(_serve(server, swarm, shown_db))


async def _serve(server: uvicorn.Server, swarm: Swarm, shown_db: str) -> None:
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    # Open the database before listening, so that a bad URL is one line, not a startup trace.
    try:
        await swarm.open()
    except (OSError, ImportError, sqlite3.Error, SQLAlchemyError, QaptenError) as exc:
        reason = exc.orig if isinstance(exc, DBAPIError) else exc  # the driver's own words
        _fail(f"cannot open the database {shown_db}: {' '.join(str(reason).split())}")
    await server.serve()


# -- demo ---------------------------------------------------------------------------------------


@app.command()
def demo(
    org: Annotated[
        Path | None,
        typer.Argument(help="An org chart.", show_default="the bundled default org"),
    ] = None,
    auto: Annotated[
        bool,
        typer.Option(
            "--auto", help="Decide everything automatically and run the mission to its end."
        ),
    ] = False,
    mission: Annotated[
        str | None, typer.Option(help="The mission.", show_default="a sample product launch")
    ] = None,
    host: Annotated[str, typer.Option(help="Where the web inbox listens.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    data_dir: Annotated[Path, typer.Option(help="Database and workspaces.")] = Path(".qapten-demo"),
    model: Annotated[
        str | None,
        typer.Option(envvar="QAPTEN_MODEL", help="Overrides the chart's model (default: local)."),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(envvar="QAPTEN_BASE_URL", help="OpenAI-compatible server, for openai:NAME."),
    ] = None,
) -> None:
    """Run the default org on a sample mission with the embedded model, offline.

    Serves the web inbox on 127.0.0.1 and prompts in the terminal; decide from either.
    """
    from rich.console import Console

    from qapten.demo import DEMO_MISSION, DemoOptions, default_org, run_demo

    if not _is_loopback(host):
        _fail(f"the demo serves without configured tokens, so only on loopback, not {host}")
    try:
        chart = _load(org or default_org())
    except QaptenError as exc:
        _fail(str(exc))
    options = DemoOptions(
        chart=chart,
        data_dir=data_dir,
        mission=mission or DEMO_MISSION,
        auto=auto,
        host=host,
        port=port,
        model=_chat_model(model, base_url),
    )
    try:
        run = asyncio.run(run_demo(options, Console()))
    except QaptenError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        typer.echo(f"stopped; the run is kept in {data_dir}", err=True)
        raise typer.Exit(130) from None
    raise typer.Exit(0 if run.status == "done" else 1)


# -- clients of a running server ----------------------------------------------------------------

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


@app.command()
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
        _fail(f"--payload is not valid JSON: {exc}")
    if not isinstance(value, dict):
        _fail(f"--payload must be a JSON object ({{...}}), not {type(value).__name__}")
    return value


@app.command()
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


# -- tokens -------------------------------------------------------------------------------------


class Scope(StrEnum):
    ADMIN = "admin"
    APPROVER = "approver"
    VIEWER = "viewer"


@app.command()
def token(
    name: Annotated[str, typer.Option(help="Who holds it; recorded on their decisions.")] = "admin",
    scope: Annotated[Scope, typer.Option(case_sensitive=False)] = Scope.ADMIN,
    roles: Annotated[
        str | None, typer.Option(help="For an approver: the roles they decide for, as a,b.")
    ] = None,
) -> None:
    """Make a bearer token: print it once, and the settings entry (its SHA-256) to paste."""
    role_names = [r.strip() for r in (roles or "").split(",") if r.strip()]
    if not name.strip():
        _fail("--name is empty: say who holds the token")
    if roles is not None and (scope is not Scope.APPROVER or not role_names):
        _fail("--roles takes role names (a,b) and goes with --scope approver")
    secret = secrets.token_urlsafe(32)
    entry: dict[str, Any] = {
        "name": name.strip(),
        # The server compares SHA-256 digests of tokens (qapten.api.settings.token_digest).
        "sha256": hashlib.sha256(secret.encode()).hexdigest(),
        "scope": scope.value,
    }
    if role_names:
        entry["roles"] = role_names
    typer.echo(f"token (shown once, give it to {entry['name']}): {secret}")
    typer.echo("add to the settings file (qapten serve --settings FILE):")
    typer.echo(
        yaml.safe_dump({"tokens": [entry]}, sort_keys=False, default_flow_style=None), nl=False
    )


if __name__ == "__main__":
    app()
