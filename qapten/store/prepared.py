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
from weakref import WeakKeyDictionary

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Delete, Insert, Select, Update
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any] | None
Params = Mapping[str, Any]
Slot = tuple[str | None, Any, Processor]
"""Per position: the key of its parameter and its processor, or None and a literal's value."""
Column = tuple[str, Processor]
"""Per column returned: its key and its processor."""
Statement = Insert | Update | Delete | Select[Any]


@dataclass(frozen=True)
class Executed:
    """What a statement gave back: its rows (column key to value), and the rows it changed."""

    rows: Sequence[Mapping[str, Any]]
    rowcount: int

    @property
    def first(self) -> Mapping[str, Any] | None:
        return self.rows[0] if self.rows else None

    @property
    def scalar(self) -> Any:
        """The first column of the first row; None without rows."""
        return next(iter(self.rows[0].values())) if self.rows else None


def through_sqlalchemy(
    conn: Connection, statement: Statement, params: Params | Sequence[Params]
) -> Executed:
    """`statement` run the usual way, its outcome in the same shape as a `Prepared` one's."""
    result = conn.execute(statement, params)
    rows = [row._asdict() for row in result] if result.returns_rows else []
    return Executed(rows, result.rowcount)


class Prepared:
    """A statement compiled for a positional dialect (SQLite's), for parameters named `keys`:
    the names of the statement's own bind parameters, and the columns an INSERT or an UPDATE
    sets. `Prepared.of` makes one."""

    def __init__(self, sql: str, slots: list[Slot], columns: list[Column]) -> None:
        self.sql = sql
        self._slots = slots
        self._columns = columns

    @classmethod
    def of(cls, statement: Statement, dialect: Dialect, keys: Sequence[str]) -> Prepared | None:
        """None when the statement needs what only SQLAlchemy works out at each execution: an
        IN list to expand, or a column default computed in Python."""
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        if not isinstance(compiled, SQLCompiler) or compiled.positiontup is None:
            return None
        if compiled.insert_prefetch or compiled.update_prefetch:
            return None
        given = set(keys)
        slots: list[Slot] = []
        for name in compiled.positiontup:
            bind = compiled.binds[name]
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.expanding or bind.callable is not None:
                return None
            if bind.key in given:
                slots.append((bind.key, None, process))
            elif bind.required:
                return None  # SQLAlchemy's own error says which parameter is missing
            else:  # a literal of the statement: processed once, here
                slots.append((None, bind.value if process is None else process(bind.value), None))
        selected = statement.selected_columns if isinstance(statement, Select) else ()
        columns: list[Column] = []
        for column in compiled.effective_returning or selected:
            if column.key is None:
                return None
            process = column.type.dialect_impl(dialect).result_processor(dialect, None)
            columns.append((column.key, process))
        return cls(compiled.string, slots, columns)

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
    """Each (statement, parameter names) compiled once, on first use, for one engine; what
    cannot be prepared runs through SQLAlchemy. A statement built for one call only is let go
    with its compiled forms."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._prepared: WeakKeyDictionary[Statement, dict[tuple[str, ...], Prepared | None]]
        self._prepared = WeakKeyDictionary()

    def run(
        self, conn: Connection, statement: Statement, params: Params | Sequence[Params]
    ) -> Executed:
        if not isinstance(params, Mapping) and not params:
            return Executed([], 0)
        keys = tuple(params if isinstance(params, Mapping) else params[0])
        forms = self._prepared.get(statement)
        if forms is None:
            forms = self._prepared[statement] = {}
        try:
            prepared = forms[keys]
        except KeyError:
            prepared = forms[keys] = Prepared.of(statement, self._dialect, keys)
        if prepared is None:
            return through_sqlalchemy(conn, statement, params)
        return prepared.run(conn, params)
