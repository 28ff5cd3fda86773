"""Serving an org chart over HTTP: the serve command, its settings and admin token, and the
token command that makes the bearer tokens its settings list.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import socket
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml

from qapten.cli.common import (
    BaseUrlOption,
    DbOption,
    HostOption,
    ModelOption,
    OrgArgument,
    PortOption,
    chosen_model,
    data_dir_errors,
    fail,
    is_loopback,
    load_chart,
    swarm_for,
)
from qapten.errors import QaptenError, field_problems
from qapten.storage import default_db

if TYPE_CHECKING:
    import uvicorn

    from qapten.api.settings import ApiSettings
    from qapten.swarm import Swarm

ADMIN_TOKEN_FILE = "admin-token"


def _settings(settings_file: Path | None) -> ApiSettings:
    from pydantic import ValidationError

    from qapten.api.settings import ApiSettings

    where = settings_file or "the environment"
    try:
        return ApiSettings.load(settings_file)
    except OSError as exc:
        fail(f"cannot read {settings_file}: {exc.strerror or exc}")
    except yaml.YAMLError as exc:
        fail(f"{settings_file}: not valid YAML: {' '.join(str(exc).split())}")
    except ValidationError as exc:
        fail(f"settings from {where}: {field_problems(exc.errors(), whole='settings')}")
    except QaptenError as exc:
        fail(str(exc))


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
            fail(f"{path} is empty: delete it, and a new admin token is made at next start")
        return kept, False
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    return token, True


def serve(
    org: OrgArgument,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Database, workspaces and admin token.", show_default=".qapten"),
    ] = None,
    db: DbOption = None,
    model: ModelOption = None,
    base_url: BaseUrlOption = None,
    settings_file: Annotated[
        Path | None,
        typer.Option("--settings", envvar="QAPTEN_SETTINGS", help="YAML settings file (tokens)."),
    ] = None,
) -> None:
    """Serve the HTTP API and the web inbox for an org chart."""
    from pydantic import SecretStr
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    settings = _settings(settings_file)
    data_dir = data_dir or settings.data_dir
    if not settings.all_tokens() and not is_loopback(host):
        fail(
            f"refusing to listen on {host} without configured tokens: anyone who can reach it "
            "could decide; set QAPTEN_ADMIN_TOKEN or tokens in --settings (see 'qapten token')"
        )
    chart = load_chart(org)
    model_given = chosen_model(model, base_url)
    db = db or default_db(data_dir)
    try:
        make_url(db)
    except ArgumentError:
        fail(f"--db {db!r} is not a database URL: use sqlite:///FILE")
    swarm = swarm_for(chart, model=model_given, db=db, data_dir=data_dir)
    from qapten.api.listen import listen

    try:
        sock = listen(host, port)
    except QaptenError as exc:
        fail(str(exc))
    # Every mistake above is reported before anything is written.
    url = f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
    notes = []
    with data_dir_errors(data_dir):
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not settings.all_tokens():
            token, created = _admin_token(data_dir)
            settings = settings.model_copy(update={"admin_token": SecretStr(token)})
            where = data_dir / ADMIN_TOKEN_FILE
            notes = [f"admin token: in {where}"]
            if created:
                notes = [f"admin token (shown once; kept in {where}): {token}"]
                notes.append(f"inbox: {url}#token={token}")

    import uvicorn

    from qapten.api import create_app

    settings = settings.model_copy(update={"data_dir": data_dir})
    web_app = create_app(swarm, settings)
    server = uvicorn.Server(uvicorn.Config(web_app, host=host, port=port, log_level="info"))
    typer.echo(f"Qapten serving {chart.name} ({len(chart.roles)} roles) on {url}")
    for note in notes:
        typer.echo(note)
    asyncio.run(_serve(server, swarm, sock))


async def _serve(server: uvicorn.Server, swarm: Swarm, sock: socket.socket) -> None:
    # Open before listening, so that a bad database URL or MCP server is one line, not a trace.
    try:
        await swarm.open()
    except QaptenError as exc:
        fail(str(exc))
    await server.serve(sockets=[sock])


class Scope(StrEnum):
    ADMIN = "admin"
    APPROVER = "approver"
    VIEWER = "viewer"


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
        fail("--name is empty: say who holds the token")
    if roles is not None and (scope is not Scope.APPROVER or not role_names):
        fail("--roles takes role names (a,b) and goes with --scope approver")
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
