"""SQLite's write-ahead log is copied into the database file by the store's own thread, never by
a commit: the commits stay short, and the log still reaches the file while the store is open."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

from qapten.checkpoints import InlineSqliteSaver
from qapten.storage import open_storage
from qapten.store import Store

EVENTS = 300
"""Their log stays under SQLite's own threshold (1,000 pages): only the thread copies it."""
THREAD = "qapten-wal"


def _rows_in_file(path: Path) -> int:
    """The events the database file itself holds, not its log: an immutable reader does not
    look at the log."""
    with sqlite3.connect(f"file:{path}?immutable=1", uri=True) as db:
        try:
            (count,) = db.execute("SELECT count(*) FROM qapten_events").fetchone()
        except sqlite3.OperationalError:  # the table's creation is still only in the log
            count = 0
    db.close()
    return int(count)


async def test_the_log_reaches_the_file_while_the_store_is_open(tmp_path: Path) -> None:
    path = tmp_path / "qapten.db"
    threads = _threads()
    store = await Store.open(f"sqlite:///{path}")
    try:
        assert _threads() == threads + 1
        before = _rows_in_file(path)
        for i in range(EVENTS):
            await store.add_event(None, "test.tick", {"i": i, "pad": "x" * 2_000})
        async with asyncio.timeout(10):
            while _rows_in_file(path) != before + EVENTS:  # noqa: ASYNC110 — the file is the signal
                await asyncio.sleep(0.05)
    finally:
        await store.close()
    assert _threads() == threads  # closing the store stopped its thread


def _threads() -> int:
    return sum(thread.name == THREAD for thread in threading.enumerate())


async def test_no_commit_checkpoints_on_the_event_loop(tmp_path: Path) -> None:
    """Each connection that writes on the loop, the store's and LangGraph's checkpointer's,
    leaves the checkpoints to the store's thread."""
    path = tmp_path / "qapten.db"
    storage = await open_storage(f"sqlite:///{path}")
    try:
        store_db = storage.store.engine.raw_connection()
        try:
            assert store_db.driver_connection.execute(  # type: ignore[union-attr]
                "PRAGMA wal_autocheckpoint"
            ).fetchone() == (0,)
        finally:
            store_db.close()
        saver = storage.checkpointer
        assert isinstance(saver, InlineSqliteSaver)
        assert saver.conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
    finally:
        await storage.close()
