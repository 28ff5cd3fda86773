"""Where a swarm keeps its runs: the store (proposals, events, journal) and LangGraph's
checkpoints, opened together from one database URL."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qapten.errors import ConfigurationError

if TYPE_CHECKING:  # loaded when a database opens: `default_db` serves the CLI's quick start
    from langgraph.checkpoint.base import BaseCheckpointSaver

    from qapten.store import Store


@dataclass
class Storage:
    store: Store
    checkpointer: BaseCheckpointSaver[Any]
    closers: tuple[Callable[[], Awaitable[None]], ...] = ()

    async def close(self) -> None:
        for close in self.closers:
            await close()
        await self.store.close()


async def open_storage(db: str) -> Storage:
    """Open (and create or upgrade if need be) the store and the checkpoints of `db`.

    Raises `ConfigurationError` naming the database (never its password) and the driver's own
    reason when it cannot be opened: a user's mistake is one line, not a traceback.
    """
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    from qapten.store import Store

    url = engine_url(db)
    store: Store | None = None
    try:
        store = await Store.open(url)
        if is_postgres(url):
            from qapten.checkpoints import open_postgres_checkpointer

            saver, close = await open_postgres_checkpointer(libpq_url(url))
            return Storage(store, saver, (close,))
        from qapten.checkpoints import open_checkpointer

        sqlite_saver = open_checkpointer(sqlite_path(db))
        return Storage(store, sqlite_saver, (_closer(sqlite_saver.conn.close),))
    except BaseException as exc:
        if store is not None:
            await store.close()
        if not isinstance(
            exc, (OSError, ImportError, sqlite3.Error, SQLAlchemyError, _driver_errors())
        ):
            raise
        reason = exc.orig if isinstance(exc, DBAPIError) else exc  # the driver's own words
        msg = f"cannot open the database {shown_url(db)}: {' '.join(str(reason).split())}"
        raise ConfigurationError(msg) from exc


def _closer(close: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def closing() -> None:
        close()

    return closing


def _driver_errors() -> type[Exception]:
    try:
        from psycopg import Error
    except ImportError:  # the postgres extra is not installed: SQLite only
        return sqlite3.Error
    return Error


def shown_url(db: str) -> str:
    """`db` as it may be shown: without its password."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(db).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a database URL)"


def engine_url(db: str) -> str:
    """SQLAlchemy's URL for `db`. ``postgresql://`` (or ``postgres://``) means psycopg 3 here;
    SQLAlchemy alone would pick psycopg2."""
    check_db(db)
    for scheme in ("postgresql://", "postgres://"):
        if db.startswith(scheme):
            return "postgresql+psycopg://" + db.removeprefix(scheme)
    return db


def libpq_url(url: str) -> str:
    """The ``postgresql://`` URL that psycopg and libpq read, from SQLAlchemy's."""
    return "postgresql://" + url.split("://", 1)[1]


def is_postgres(db: str) -> bool:
    return db.split("://", 1)[0] in ("postgresql", "postgres", "postgresql+psycopg")


def check_db(db: str) -> None:
    """Raise `ConfigurationError` unless `db` is a database Qapten can use."""
    if db.startswith("sqlite:///") or is_postgres(db):
        return
    use = "use sqlite:///FILE or postgresql://USER:PASSWORD@HOST:PORT/NAME"
    shown = shown_url(db)
    if "://" not in db or shown == "(not a database URL)":
        raise ConfigurationError(f"{db!r} is not a database URL: {use}")
    raise ConfigurationError(f"unsupported database {shown!r}: {use}")


def default_db(data_dir: Path) -> str:
    """The database URL of a data directory: a SQLite file in it."""
    return f"sqlite:///{data_dir / 'qapten.db'}"


def sqlite_path(db: str) -> str:
    check_db(db)
    return db.removeprefix("sqlite:///")


def default_workspaces(db: str) -> Path:
    """Beside a SQLite file: qapten.db → qapten-workspaces/; for a database server,
    ``$QAPTEN_WORKSPACES``, or qapten-workspaces/ in the current directory."""
    if is_postgres(db):
        return Path(os.environ.get("QAPTEN_WORKSPACES", "qapten-workspaces"))
    path = Path(sqlite_path(db))
    return path.with_name(path.stem + "-workspaces")
