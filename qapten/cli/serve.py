"""Serving an org chart over HTTP: the serve command, its settings and admin token, and the
token command that makes the bearer tokens its settings list.
"""

from __future__ import annotations

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
    OrgsArgument,
    PortOption,
    checked_db,
    chosen_model,
    data_dir_errors,
    fail,
    is_loopback,
    load_teams,
    run_loop,
    run_queue,
    swarm_for,
)
from qapten.errors import ConfigurationError, QaptenError, field_problems
from qapten.storage import default_db
from qapten.teams import TEAM_NAME

if TYPE_CHECKING:
    import uvicorn

    from qapten.api.settings import ApiSettings
    from qapten.queue import RunQueue
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
    orgs: OrgsArgument,
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
    workers: Annotated[
        bool | None,
        typer.Option(
            "--workers/--no-workers",
            envvar="QAPTEN_WORKERS",
            help="Leave runs to 'qapten worker' processes (PostgreSQL): this server only records "
            "decisions and enqueues, so several servers can share one database.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the HTTP API and the web inbox for an org chart (or several: one team each)."""
    from pydantic import SecretStr

    settings = _settings(settings_file)
    data_dir = data_dir or settings.data_dir
    workers = settings.workers if workers is None else workers
    teams = load_teams(orgs)
    if len(teams) > 1 and not settings.tokens:
        fail(
            "a deployment of several org charts needs each team's tokens (team: NAME) in "
            "--settings; see 'qapten token --team'"
        )
    try:
        for team in teams:
            settings.team_tokens(team, teams.keys())
        if settings.channels.enabled:
            _check_channels(settings, teams=len(teams))
    except QaptenError as exc:
        fail(f"settings: {exc}")
    if not settings.all_tokens() and not is_loopback(host):
        fail(
            f"refusing to listen on {host} without configured tokens: anyone who can reach it "
            "could decide; set QAPTEN_ADMIN_TOKEN or tokens in --settings (see 'qapten token')"
        )
    model_given = chosen_model(model, base_url)
    db = checked_db(db or settings.db or default_db(data_dir))
    queue = run_queue(db) if workers else None
    swarms = {
        team: swarm_for(chart, model=model_given, db=db, data_dir=data_dir, team=team, queue=queue)
        for team, chart in teams.items()
    }
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

    from qapten.api import create_app, create_teams_app

    settings = settings.model_copy(update={"data_dir": data_dir})
    try:  # the channels' settings are checked against the tokens here (one-line errors)
        if len(swarms) == 1:
            web_app = create_app(next(iter(swarms.values())), settings)
        else:
            web_app = create_teams_app(swarms, settings)
    except QaptenError as exc:
        fail(f"settings: {exc}")
    names = [f"{chart.name} ({len(chart.roles)} roles)" for chart in teams.values()]
    if len(swarms) > 1:
        names = [f"team {team}: {name}" for team, name in zip(teams, names, strict=True)]
    server = uvicorn.Server(uvicorn.Config(web_app, host=host, port=port, log_level="info"))
    typer.echo(f"Qapten serving {'; '.join(names)} on {url}")
    if queue is not None:
        typer.echo("runs are advanced by 'qapten worker' processes on the same database")
    if settings.channels.enabled:
        typer.echo(f"notifying {', '.join(settings.channels.destinations())} (see channels.routes)")
    for note in notes:
        typer.echo(note)
    # Started from `_serve` rather than `uvicorn.run`, so that the swarms open first.
    run_loop(_serve(server, list(swarms.values()), queue, sock))


def _check_channels(settings: ApiSettings, *, teams: int) -> None:
    from qapten.channels.runtime import check_channels

    if teams > 1:
        msg = "channels: chat channels and webhooks serve a deployment of one org chart"
        raise ConfigurationError(msg)
    # Without tokens, the server makes an admin token named "admin" at its first start.
    names = [spec.name for spec in settings.all_tokens()] or ["admin"]
    check_channels(settings.channels, names)


async def _serve(
    server: uvicorn.Server, swarms: list[Swarm], queue: RunQueue | None, sock: socket.socket
) -> None:
    # Open before listening, so that a bad database URL or MCP server is one line, not a trace.
    try:
        for swarm in swarms:
            await swarm.open()
    except QaptenError as exc:
        fail(str(exc))
    try:
        await server.serve(sockets=[sock])
    finally:
        if queue is not None:
            await queue.close()


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
    team: Annotated[
        str | None,
        typer.Option(help="On a deployment of several charts: the team the token belongs to."),
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
    if team is not None:
        if not TEAM_NAME.match(team):
            fail(f"--team {team!r}: a team name is lower-case letters, digits and hyphens")
        entry["team"] = team
    typer.echo(f"token (shown once, give it to {entry['name']}): {secret}")
    typer.echo("add to the settings file (qapten serve --settings FILE):")
    typer.echo(
        yaml.safe_dump({"tokens": [entry]}, sort_keys=False, default_flow_style=None), nl=False
    )
