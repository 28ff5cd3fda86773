"""Statements run straight on SQLite's driver store and return exactly what they would through
SQLAlchemy: the same stored text, the same values back, the same errors."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from qapten.store import Store
from qapten.store import tables as t
from qapten.store.prepared import PreparedStatements

WHEN = datetime(2026, 12, 3, 16, 30, 5, 123456, tzinfo=UTC)
DATA = {"text": "naïve café ✅", "nested": {"n": [1, 2.5, None, True]}}
RAW_EVENT = "SELECT run_id, type, data, created_at FROM qapten_events WHERE id = ?"


@pytest.fixture
def conn(sqlite_store: Store) -> Iterator[Connection]:
    with sqlite_store.engine.connect() as conn:
        yield conn


def _raw(conn: Connection, sql: str, *args: Any) -> tuple[Any, ...]:
    driver = conn.connection.driver_connection
    assert driver is not None
    return tuple(driver.execute(sql, args).fetchone())


def test_rows_are_stored_as_sqlalchemy_stores_them(sqlite_store: Store, conn: Connection) -> None:
    statements = PreparedStatements(sqlite_store.engine.dialect)
    row = {"run_id": "run-1", "type": "test.one", "data": DATA, "created_at": WHEN}
    statements.run(conn, insert(t.events), [row, {**row, "type": "test.two"}])
    conn.execute(insert(t.events), {**row, "type": "test.three"})
    conn.commit()

    prepared = [_raw(conn, RAW_EVENT, 1), _raw(conn, RAW_EVENT, 2)]
    through_sqlalchemy = _raw(conn, RAW_EVENT, 3)
    assert prepared[0] == (*through_sqlalchemy[:1], "test.one", *through_sqlalchemy[2:])
    assert prepared[1][1] == "test.two"
    read = conn.execute(select(t.events).order_by(t.events.c.id)).all()
    assert [r.type for r in read] == ["test.one", "test.two", "test.three"]
    assert all(r.data == DATA and r.created_at == WHEN.replace(tzinfo=None) for r in read)


def test_an_update_returns_its_rows_typed_and_counts_them(
    sqlite_store: Store, conn: Connection
) -> None:
    statements = PreparedStatements(sqlite_store.engine.dialect)
    conn.execute(
        insert(t.runs),
        {"id": "run-1", "org": "acme", "mission": "m", "status": "waiting"}
        | {"created_at": WHEN, "updated_at": WHEN},
    )
    # A literal in the statement ("done") and parameters of its own (b_*).
    move = (
        update(t.runs)
        .where(
            t.runs.c.id == bindparam("b_run"),
            t.runs.c.status != "done",
            t.runs.c.status == bindparam("b_from"),
        )
        .returning(t.runs.c.id, t.runs.c.updated_at, t.runs.c.lease_token)
    )
    later = WHEN.replace(year=2027)
    params = {"b_run": "run-1", "b_from": "waiting", "status": "running", "updated_at": later}
    moved = statements.run(conn, move, params)
    assert moved.rowcount == 1
    assert [dict(row) for row in moved.rows] == [
        {"id": "run-1", "updated_at": later.replace(tzinfo=None), "lease_token": 0}
    ]
    again = statements.run(conn, move, params)  # no longer waiting
    assert again.rows == [] and again.rowcount == 0

    status = select(t.runs.c.status, t.runs.c.created_at).where(t.runs.c.id == bindparam("b_run"))
    assert [dict(row) for row in statements.run(conn, status, {"b_run": "run-1"}).rows] == [
        {"status": "running", "created_at": WHEN.replace(tzinfo=None)}
    ]


def test_a_driver_error_is_sqlalchemys_error(sqlite_store: Store, conn: Connection) -> None:
    statements = PreparedStatements(sqlite_store.engine.dialect)
    row = {"run_id": None, "type": None, "data": {}, "created_at": WHEN}  # type is NOT NULL
    with pytest.raises(IntegrityError, match=r"NOT NULL constraint failed: qapten_events\.type"):
        statements.run(conn, insert(t.events), row)


def test_what_cannot_be_prepared_runs_through_sqlalchemy(
    sqlite_store: Store, conn: Connection
) -> None:
    """An IN list is expanded at each execution, and a default computed in Python is worked out
    then too: SQLAlchemy runs those, and the outcome has the same shape."""
    statements = PreparedStatements(sqlite_store.engine.dialect)
    run = {"org": "acme", "mission": "m", "status": "waiting", "created_at": WHEN}
    # lease_token is left out: its default (0) is SQLAlchemy's to fill in.
    statements.run(conn, insert(t.runs), [{**run, "id": "run-1", "updated_at": WHEN}])
    statements.run(conn, insert(t.runs), [{**run, "id": "run-2", "updated_at": WHEN}])
    ids = select(t.runs.c.id, t.runs.c.lease_token).where(
        t.runs.c.id.in_(bindparam("b_ids", expanding=True))
    )
    found = statements.run(conn, ids.order_by(t.runs.c.id), {"b_ids": ["run-1", "run-2", "x"]})
    assert [dict(row) for row in found.rows] == [
        {"id": "run-1", "lease_token": 0},
        {"id": "run-2", "lease_token": 0},
    ]
    count = statements.run(conn, select(func.count()).select_from(t.runs), {})
    assert count.scalar == 2


def test_a_statement_built_for_one_call_is_let_go(sqlite_store: Store, conn: Connection) -> None:
    statements = PreparedStatements(sqlite_store.engine.dialect)
    query = select(t.runs.c.id).where(t.runs.c.id == bindparam("b_run"))
    assert statements.run(conn, query, {"b_run": "none"}).rows == []
    gone = weakref.ref(query)
    del query
    gc.collect()
    assert gone() is None
