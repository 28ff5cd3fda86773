"""The store's most frequent statements, compiled once and run on SQLite's own cursor.

A decision, and each step of a run, is a handful of short statements. For each of them,
SQLAlchemy's way through an execution (its cache key, execution context and result object)
costs about as much again as SQLite takes to run it. A `Prepared` statement keeps what that
way works out anew each time: the SQL, where each parameter goes, and the type processing
SQLAlchemy would apply (its own processors, so values are stored exactly as through
SQLAlchemy). Statements are still written once, in SQLAlchemy Core; a database server runs them
through SQLAlchemy as before (`StoreBase._execute`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Delete, Insert, Select, Update
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any] | None
Params = Mapping[str, Any]
Statement = Insert | Update | Delete | Select[Any]


@dataclass(frozen=True)
class Executed:
    """What a statement gave back: its rows (column key to value), and the rows it changed."""

    rows: Sequence[Mapping[str, Any]]
    rowcount: int


class Prepared:
    """`statement` compiled for `dialect` (a positional one: SQLite's), for parameters named
    `keys`: the names of the statement's own bind parameters, and the columns an INSERT or an
    UPDATE sets."""

    def __init__(self, statement: Statement, dialect: Dialect, keys: Sequence[str]) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        assert isinstance(compiled, SQLCompiler) and compiled.positiontup is not None
        # Column defaults computed in Python are SQLAlchemy's to work out at each execution.
        assert not compiled.insert_prefetch and not compiled.update_prefetch, statement
        self.sql = compiled.string
        given = set(keys)
        self._slots: list[tuple[str | None, Any, Processor]] = []
        """Per position: the key of its parameter, or None and the literal's processed value."""
        for name in compiled.positiontup:
            bind = compiled.binds[name]
            assert not bind.expanding, f"an IN list is expanded at each execution: {name}"
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.key in given:
                self._slots.append((bind.key, None, process))
            else:
                assert bind.callable is None and not bind.required, f"no value for {name}"
                value = bind.value if process is None else process(bind.value)
                self._slots.append((None, value, None))
        columns = compiled.effective_returning or (
            statement.selected_columns if isinstance(statement, Select) else ()
        )
        self._columns: list[tuple[str, Processor]] = []
        for column in columns:
            assert column.key is not None, f"a column without a name: {column}"
            process = column.type.dialect_impl(dialect).result_processor(dialect, None)
            self._columns.append((column.key, process))

    def run(self, conn: Connection, params: Params | Sequence[Params]) -> Executed:
        """Run on `conn`'s driver connection, in whatever transaction `conn` has open; a list
        of parameter sets runs it once for each (rows are then not returned)."""
        driver = conn.connection.driver_connection
        assert driver is not None, "an open connection"
        try:
            if isinstance(params, Mapping):
                cursor = driver.execute(self.sql, self._arguments(params))
                rows = [self._row(values) for values in cursor.fetchall()] if self._columns else []
            else:
                cursor = driver.executemany(self.sql, [self._arguments(one) for one in params])
                rows = []
        except conn.dialect.loaded_dbapi.Error as error:
            # The same exception as through SQLAlchemy, so callers catch one kind.
            raise DBAPIError.instance(
                self.sql, params, error, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect
            ) from error
        return Executed(rows, cursor.rowcount)

    def _arguments(self, params: Params) -> list[Any]:
        return [
            value if key is None else params[key] if process is None else process(params[key])
            for key, value, process in self._slots
        ]

    def _row(self, values: Sequence[Any]) -> dict[str, Any]:
        return {
            key: value if process is None else process(value)
            for (key, process), value in zip(self._columns, values, strict=True)
        }


class PreparedStatements:
    """Each (statement, parameter names) compiled once, on first use, for one engine."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._prepared: dict[tuple[int, tuple[str, ...]], Prepared] = {}
        self._statements: list[Statement] = []  # kept alive: their ids are the keys

    def run(
        self, conn: Connection, statement: Statement, params: Params | Sequence[Params]
    ) -> Executed:
        first = params if isinstance(params, Mapping) else params[0]
        key = (id(statement), tuple(first))
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = self._prepared[key] = Prepared(statement, self._dialect, key[1])
            self._statements.append(statement)
        return prepared.run(conn, params)
