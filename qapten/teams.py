"""Several org charts on one deployment (the agent farm): each chart is a team of its own.

A team's runs, proposals, events and checkpoints live apart from every other team's: in a
PostgreSQL schema of its own (``qapten_team_<name>``), or a SQLite file of its own beside the
deployment's. Its tokens are its own too (``team:`` in the settings), so a token of one team
reaches nothing of another: not even the ids. One chart alone is not a team: it keeps the
database as given, as before.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from qapten.errors import ConfigurationError
from qapten.orgchart import OrgChart
from qapten.storage import is_postgres, sqlite_path

TEAM_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
SOLO = ""
"""The team name of a deployment with one chart."""


def team_name(chart: OrgChart) -> str:
    """The chart's name as a team name: lower case, words joined by hyphens."""
    slug = re.sub(r"[^a-z0-9]+", "-", chart.name.lower()).strip("-")[:40].rstrip("-")
    return slug or "team"


def teams_of(charts: Sequence[tuple[Path, OrgChart]]) -> dict[str, OrgChart]:
    """The deployment's teams by name: one chart is the solo team (``""``); several are
    named after their charts, and two charts of the same name are a mistake."""
    if len(charts) == 1:
        return {SOLO: charts[0][1]}
    teams: dict[str, OrgChart] = {}
    files: dict[str, Path] = {}
    for path, chart in charts:
        name = team_name(chart)
        if name in teams:
            msg = (
                f"{path} and {files[name]} are both team {name!r} (from the charts' names): "
                "give each chart a name of its own"
            )
            raise ConfigurationError(msg)
        teams[name] = chart
        files[name] = path
    return teams


def team_db(db: str, team: str) -> str:
    """The database URL where `team` keeps its records (`db` itself for the solo team)."""
    if team == SOLO:
        return db
    if is_postgres(db):
        # libpq's options reach the server at connect time: every connection of the team,
        # the store's and the checkpointer's, works in the team's schema (made on first use).
        options = quote(f"-csearch_path={team_schema(team)}", safe="")
        return f"{db}{'&' if '?' in db else '?'}options={options}"
    path = Path(sqlite_path(db))
    return f"sqlite:///{path.with_name(f'{path.stem}-{team}{path.suffix}')}"


def team_schema(team: str) -> str:
    return "qapten_team_" + team.replace("-", "_")
