"""Teams (qapten.teams): their names, the deployment's teams from its charts, where each team
keeps its records, and two teams on one PostgreSQL database kept apart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from qapten import Swarm
from qapten.errors import ConfigurationError, ProposalNotFound, RunNotFound
from qapten.orgchart import OrgChart
from qapten.teams import SOLO, TEAM_NAME, team_db, team_name, team_schema, teams_of
from tests.postgres import Cluster

FARM = Path(__file__).resolve().parent / "charts" / "farm"
LAUNCH, SUPPORT = FARM / "launch.yaml", FARM / "support.yaml"


def named(name: str) -> OrgChart:
    return OrgChart.from_file(LAUNCH).model_copy(update={"name": name})


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Launch Team", "launch-team"),
        ("support-team", "support-team"),
        ("  ACME / R&D  Dept. ", "acme-r-d-dept"),
        ("Team 42", "team-42"),
        ("!!!", "team"),  # nothing left of the name: a name all the same
        ("A" * 39 + " b", "a" * 39),  # cut at 40, without a hyphen at the end
        ("x" * 60, "x" * 40),
    ],
)
def test_team_names_are_slugs_of_the_charts_names(name: str, slug: str) -> None:
    assert team_name(named(name)) == slug
    assert TEAM_NAME.match(slug)


def test_one_chart_is_the_solo_team() -> None:
    chart = OrgChart.from_file(LAUNCH)
    assert teams_of([(LAUNCH, chart)]) == {SOLO: chart}


def test_several_charts_are_teams_named_after_them() -> None:
    launch, support = OrgChart.from_file(LAUNCH), OrgChart.from_file(SUPPORT)
    teams = teams_of([(LAUNCH, launch), (SUPPORT, support)])
    assert teams == {"launch-team": launch, "support-team": support}
    assert list(teams) == ["launch-team", "support-team"]  # in the order given


def test_two_charts_of_the_same_team_name_are_refused_naming_both_files() -> None:
    first, second = Path("ops/a.yaml"), Path("ops/b.yaml")
    charts = [
        (first, named("Launch Team")),
        (LAUNCH, named("Other")),
        (second, named("launch team")),
    ]
    with pytest.raises(ConfigurationError) as caught:
        teams_of(charts)
    message = str(caught.value)
    assert str(first) in message and str(second) in message and "'launch-team'" in message


def test_a_team_on_sqlite_has_a_file_beside_the_deployments(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'data' / 'qapten.db'}"
    assert team_db(db, "launch-team") == f"sqlite:///{tmp_path / 'data' / 'qapten-launch-team.db'}"
    assert team_db(db, "support-team") != team_db(db, "launch-team")
    assert team_db(db, SOLO) == db


@pytest.mark.parametrize(
    ("db", "kept"),
    [
        ("postgresql://u:p@db.example:5432/qapten", {}),
        ("postgresql://u@db.example/qapten?sslmode=require", {"sslmode": ["require"]}),
    ],
)
def test_a_team_on_postgresql_has_a_schema_in_its_search_path(
    db: str, kept: dict[str, list[str]]
) -> None:
    assert team_schema("launch-team") == "qapten_team_launch_team"
    url = team_db(db, "launch-team")
    parts, given = urlsplit(url), urlsplit(db)
    assert (parts.scheme, parts.netloc, parts.path) == (given.scheme, given.netloc, given.path)
    assert parse_qs(parts.query) == {**kept, "options": ["-csearch_path=qapten_team_launch_team"]}
    assert team_db(db, SOLO) == db


# -- two teams on one PostgreSQL database ------------------------------------------------------


@pytest.fixture
async def two_teams(
    postgres: Cluster, tmp_path: Path
) -> AsyncIterator[tuple[str, dict[str, Swarm]]]:
    """The launch and support teams' swarms on one new database, each with its own chart."""
    db = postgres.new_database()
    charts = [(path, OrgChart.from_file(path)) for path in (LAUNCH, SUPPORT)]
    swarms = {
        team: Swarm.from_yaml(
            path,
            db=team_db(db, team),
            team=team,
            workspaces=tmp_path / team,
            sweep_interval=None,
        )
        for (path, _), team in zip(charts, teams_of(charts), strict=True)
    }
    try:
        yield db, swarms
    finally:
        for swarm in swarms.values():
            await swarm.close()


async def test_two_teams_on_one_postgresql_database_keep_their_runs_apart(
    two_teams: tuple[str, dict[str, Swarm]],
) -> None:
    db, swarms = two_teams
    a, b = swarms["launch-team"], swarms["support-team"]
    run = await a.start("Launch the product")
    [plan] = await a.pending(run.id)  # once A's steps in flight are done
    assert (plan.role, plan.kind) == ("ceo", "plan")

    assert [r.id for r in await a.runs()] == [run.id]
    assert await b.runs() == []
    assert await b.pending() == []
    with pytest.raises(RunNotFound):
        await b.store.get_run(run.id)
    with pytest.raises(RunNotFound):
        await b.run(run.id)
    with pytest.raises(ProposalNotFound):
        await b.proposal(plan.id)
    with pytest.raises(ProposalNotFound):
        await b.decide(plan.id, "approve", by="bob")
    assert all(e.run_id != run.id for e in await b.events())
    assert (await a.proposal(plan.id)).status == "pending"  # B's attempt changed nothing

    other = await b.start("Answer the tickets")
    assert [r.id for r in await b.runs()] == [other.id]
    assert [r.id for r in await a.runs()] == [run.id]

    # Each team's records are in its own schema, the checkpoints too; none in public.
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_name IN ('qapten_runs', 'checkpoints')"
        ).fetchall()
        assert sorted(rows) == [
            ("qapten_team_launch_team", "checkpoints"),
            ("qapten_team_launch_team", "qapten_runs"),
            ("qapten_team_support_team", "checkpoints"),
            ("qapten_team_support_team", "qapten_runs"),
        ]
        runs = {
            schema: [row[0] for row in conn.execute(f"SELECT id FROM {schema}.qapten_runs")]
            for schema in ("qapten_team_launch_team", "qapten_team_support_team")
        }
        assert runs == {
            "qapten_team_launch_team": [run.id],
            "qapten_team_support_team": [other.id],
        }
