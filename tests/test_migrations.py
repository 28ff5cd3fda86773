"""Qapten's tables across releases: a database of an earlier release (or of one made before
migrations existed) is upgraded in place with its records kept; the migrations make exactly the
tables of `qapten.store.tables`; a database newer than this Qapten is refused in one line."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, Table, create_engine, insert, text

from qapten.errors import ConfigurationError
from qapten.proposals import ProposalStatus
from qapten.storage import engine_url, open_storage
from qapten.store import Store
from qapten.store import tables as t
from qapten.store.schema import MIGRATIONS, VERSION_TABLE, migrate, upgrade
from qapten.store.tables import SCHEMA_REVISION, metadata

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
RUN_ID = "r_old"
PROPOSAL_ID = "p_old"
INT32_MAX = 2**31 - 1


@contextmanager
def connected(db: str) -> Iterator[Connection]:
    """A connection in a transaction (committed at the end) on a fresh engine over `db`."""
    engine = create_engine(engine_url(db))
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def make_first_release_db(db: str, *, with_version_table: bool = True) -> None:
    """`db` as the first release left it (revision 0001), with a run waiting on a pending plan
    and one event; without the version table, as create_all made it before migrations."""
    with connected(db) as conn:
        migrate(conn, "0001")
        # The columns of 0001 as they are in the database, not as tables.py says today.
        old = MetaData()
        old.reflect(conn, only=["qapten_runs", "qapten_proposals", "qapten_events"])
        conn.execute(
            insert(old.tables["qapten_runs"]),
            {
                "id": RUN_ID,
                "org": "Brightness",
                "mission": "Launch the old product",
                "status": "waiting",
                "result": None,
                "error": None,
                "created_at": WHEN,
                "updated_at": WHEN,
                "lease_owner": None,
                "lease_token": 0,
                "lease_expires_at": None,
            },
        )
        conn.execute(
            insert(old.tables["qapten_proposals"]),
            {
                "id": PROPOSAL_ID,
                "run_id": RUN_ID,
                "task_id": "root",
                "step": 1,
                "role": "ceo",
                "kind": "plan",
                "act": "delegate",
                "title": "Split the launch",
                "payload": {"tasks": [{"to": "cto", "brief": "Ship it"}]},
                "payload_hash": "0" * 64,
                "status": "pending",
                "created_at": WHEN,
                "decided_at": None,
                "decided_by": None,
                "feedback": None,
                "decided_payload": None,
                "approved_hash": None,
                "tokens": 12,
                "expires_at": None,
                "remind_at": None,
                "escalated_to": None,
                "quorum": None,
                "approvals": [],
            },
        )
        conn.execute(
            insert(old.tables["qapten_events"]),
            {"run_id": RUN_ID, "type": "run.started", "data": {"mission": "x"}, "created_at": WHEN},
        )
        if not with_version_table:
            conn.execute(text(f"DROP TABLE {VERSION_TABLE}"))


def version_rows(db: str) -> list[str]:
    with connected(db) as conn:
        return list(conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())


def column_type(db: str, table: str, column: str) -> str:
    with connected(db) as conn:
        query = text(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = :t AND column_name = :c"
        )
        return str(conn.execute(query, {"t": table, "c": column}).scalar_one())


async def check_upgraded(db: str) -> None:
    """Opening the store upgrades `db`: the old records are there and the pending plan can be
    decided; the database is then at the head revision, with 64-bit ids on PostgreSQL."""
    store = await Store.open(engine_url(db))
    try:
        run = await store.get_run(RUN_ID)
        assert (run.status, run.mission) == ("waiting", "Launch the old product")
        pending = await store.list_proposals(status=ProposalStatus.PENDING)
        assert [p.id for p in pending] == [PROPOSAL_ID]
        assert pending[0].payload == {"tasks": [{"to": "cto", "brief": "Ship it"}]}
        assert pending[0].created_at == WHEN
        decided = await store.decide(
            PROPOSAL_ID,
            status=ProposalStatus.APPROVED,
            decided_by="alice",
            decided_payload=pending[0].payload,
            approved_hash=pending[0].payload_hash,
        )
        assert (decided.status, decided.decided_by) == (ProposalStatus.APPROVED, "alice")
        assert await store.list_proposals(status=ProposalStatus.PENDING) == []
        events = await store.events(run_id=RUN_ID)
        assert events[0].type == "run.started"  # the old event, kept
        assert events[-1].id > events[0].id  # new events come after it
    finally:
        await store.close()
    assert version_rows(db) == [SCHEMA_REVISION]
    if db.startswith("postgresql"):
        assert column_type(db, "qapten_events", "id") == "bigint"
        assert column_type(db, "qapten_notes", "id") == "bigint"


async def test_a_database_of_the_previous_release_is_upgraded_with_its_records(db: str) -> None:
    make_first_release_db(db)
    assert version_rows(db) == ["0001"]
    await check_upgraded(db)


async def test_a_database_made_before_migrations_existed_is_upgraded(db: str) -> None:
    make_first_release_db(db, with_version_table=False)
    await check_upgraded(db)


def test_opening_twice_changes_nothing_more(db: str) -> None:
    with connected(db) as conn:
        upgrade(conn)
    with connected(db) as conn:
        upgrade(conn)  # at the head already: no second version row, no error
    assert version_rows(db) == [SCHEMA_REVISION]


@pytest.mark.parametrize("made_by", ["migrations", "create_all"])
def test_the_migrations_make_exactly_the_tables_of_the_metadata(db: str, made_by: str) -> None:
    with connected(db) as conn:
        if made_by == "migrations":
            migrate(conn, SCHEMA_REVISION)  # from an empty database, through every migration
        else:
            upgrade(conn)  # a new database: create_all and a version row
    with connected(db) as conn:
        # The version table is Alembic's own, under Qapten's name: the context must be told it,
        # as env.py tells it, or the table looks like one the metadata lacks.
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        assert compare_metadata(context, metadata) == []
        assert context.get_current_revision() == SCHEMA_REVISION


@pytest.mark.parametrize("made", ["new", "upgraded"])
async def test_event_and_note_ids_go_past_32_bits(db: str, made: str) -> None:
    """The point of 0002: event and note ids past 2**31 - 1, on an upgraded database as on a
    new one (on PostgreSQL, the serials' sequences widen with their columns)."""
    if made == "upgraded":
        make_first_release_db(db)
    store = await Store.open(engine_url(db))

    def to_the_limit(conn: Connection) -> None:
        for table in (t.events, t.notes):
            if conn.dialect.name == "postgresql":
                sequence = f"pg_get_serial_sequence('{table.name}', 'id')"
                conn.execute(text(f"SELECT setval({sequence}, {INT32_MAX})"))
            else:  # SQLite gives the largest rowid plus one
                conn.execute(insert(table), {**row(table, "first"), "id": INT32_MAX})

    def row(table: Table, key: str) -> dict[str, object]:
        if table is t.events:
            return {"run_id": RUN_ID, "type": key, "data": {}, "created_at": WHEN}
        return {"run_id": RUN_ID, "task_id": "root", "key": key, "text": key, "created_at": WHEN}

    def add(conn: Connection) -> list[int]:
        return [
            int(conn.execute(insert(table).returning(table.c.id), row(table, "next")).scalar_one())
            for table in (t.events, t.notes)
        ]

    try:
        await store.write(to_the_limit)
        assert await store.write(add) == [INT32_MAX + 1, INT32_MAX + 1]
    finally:
        await store.close()


def test_schema_revision_is_the_migrations_head() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(config)
    assert script.get_heads() == [SCHEMA_REVISION]
    # One line of revisions from the first release's to the head.
    chain = [s.revision for s in script.walk_revisions()]
    assert chain[-1] == "0001" and chain[0] == SCHEMA_REVISION


async def test_a_database_of_a_newer_qapten_is_refused_with_a_hint(db: str) -> None:
    with connected(db) as conn:
        upgrade(conn)
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    with pytest.raises(ConfigurationError, match="upgrade Qapten") as caught:
        await open_storage(db)
    assert "9999" in str(caught.value)
    assert version_rows(db) == ["9999"]  # nothing changed


@pytest.mark.parametrize("made", ["new", "upgraded"])
def test_the_deadline_indexes_hold_only_proposals_with_a_deadline(db: str, made: str) -> None:
    """The point of 0005: a decision on a proposal without a deadline moves no entry of the
    deadline indexes, and a run's move no entry of a lease index (there is none)."""
    if made == "upgraded":
        make_first_release_db(db)
    with connected(db) as conn:
        upgrade(conn)
    with connected(db) as conn:
        if conn.dialect.name == "postgresql":
            rows = conn.execute(text("SELECT indexname, indexdef FROM pg_indexes"))
        else:
            rows = conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'index'"))
        made_as = {name: str(sql) for name, sql in rows}
    for column in ("expires_at", "remind_at"):
        index = made_as[f"ix_qapten_proposals_{column.removesuffix('_at')}"]
        assert f"{column} IS NOT NULL" in index, index
    assert "ix_qapten_runs_lease" not in made_as
    assert "ix_qapten_runs_status" in made_as
