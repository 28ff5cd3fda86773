"""Where a swarm keeps its runs: the store (proposals, events, journal) and LangGraph's
checkpoints, opened together from one database URL."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from qapten.errors import ConfigurationError

if TYPE_CHECKING:  # loaded when a database opens: `default_db` serves the CLI's quick start
    from qapten.checkpoints import InlineSqliteSaver
    from qapten.store import Store


@dataclass
class Storage:
    store: Store
    checkpointer: InlineSqliteSaver

    async def close(self) -> None:
        self.checkpointer.conn.close()
        await self.store.close()


async def open_storage(db: str) -> Storage:
    """Open (and create if need be) the store and the checkpoints of `db`.

    Raises `ConfigurationError` naming the database (never its password) and the driver's own
    reason when it cannot be opened: a user's mistake is one line, not a traceback.
    """
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

    from qapten.checkpoints import open_checkpointer
    from qapten.store import Store

    path = sqlite_path(db)
    store: Store | None = None
    try:
        store = await Store.open(db)
        checkpointer = open_checkpointer(path)
    except (OSError, ImportError, sqlite3.Error, SQLAlchemyError) as exc:
        if store is not None:
            await store.close()
        reason = exc.orig if isinstance(exc, DBAPIError) else exc  # the driver's own words
        try:
            shown = make_url(db).render_as_string(hide_password=True)
        except ArgumentError:
            shown = "(not a database URL)"
        msg = f"cannot open the database {shown}: {' '.join(str(reason).split())}"
        raise ConfigurationError(msg) from exc
    return Storage(store, checkpointer)


def default_db(data_dir: Path) -> str:
    """The database URL of a data directory: a SQLite file in it."""
    return f"sqlite:///{data_dir / 'qapten.db'}"


def sqlite_path(db: str) -> str:
    if not db.startswith("sqlite:///"):
        msg = f"unsupported database {db!r}: use sqlite:///FILE (PostgreSQL comes with scale-out)"
        raise ConfigurationError(msg)
    return db.removeprefix("sqlite:///")


def default_workspaces(db: str) -> Path:
    """Beside the database file: qapten.db → qapten-workspaces/."""
    path = Path(sqlite_path(db))
    return path.with_name(path.stem + "-workspaces")
