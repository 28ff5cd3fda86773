"""SQLite's write-ahead log, copied back into the database file by a thread of its own.

By default SQLite does that copy (a "checkpoint") inside whichever commit first takes the log
past 1,000 pages, on the connection that commits. Qapten commits on the event loop, so every
hundred or so decisions one of them took 5 to 10 ms instead of about 0.1 ms, and every request
of the process waited meanwhile. Here the connections that write stop checkpointing
(`NO_AUTOCHECKPOINT`), and `WalCheckpoints` checkpoints the file a few times a second from a
thread: SQLite does that work without Python's lock, so it runs beside the loop, on another core
where there is one.

The checkpoints are PASSIVE: they copy what no reader still needs and never make a writer or a
reader wait. A log that could not be copied whole is simply copied further at the next tick.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger(__name__)

NO_AUTOCHECKPOINT = "PRAGMA wal_autocheckpoint=0"
"""For each connection that writes while `WalCheckpoints` runs on the same file."""
INTERVAL = 0.1
"""Seconds between checkpoints. At a thousand commits a second, the log grows by about 3 MB in
that time: what SQLite's own threshold (1,000 pages of 4 KiB) lets it reach."""


class WalCheckpoints:
    """Checkpoints the SQLite file at `path` every `interval` seconds, from `start` to `stop`."""

    def __init__(self, path: str, *, interval: float = INTERVAL) -> None:
        self.path = path
        self.interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="qapten-wal", daemon=True)

    def start(self) -> WalCheckpoints:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop after the checkpoint under way, if any. (SQLite checkpoints the log once more
        when the last connection to the file closes.)"""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        connection = sqlite3.connect(self.path, check_same_thread=False)
        try:
            while not self._stopping.wait(self.interval):
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # the next tick tries again; the log keeps it all
                    log.warning("checkpoint of %s failed: %s", self.path, exc)
        finally:
            connection.close()
