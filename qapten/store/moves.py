"""Moving a run from one status to another, with its event: what finishing a run, parking it
on its proposals, and a decision or an expiry that gives it work again all share."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import bindparam, update
from sqlalchemy.engine import Connection

from qapten.store import tables as t
from qapten.store.base import NewEvent, StoreBase

# Built once (see store.py).
# done and cancelled are final: a step finishing after a cancel cannot revive the run. (Two
# inequalities rather than NOT IN: SQLAlchemy expands an IN list anew at each execution.)
_MOVE_RUN = update(t.runs).where(
    t.runs.c.id == bindparam("b_run"),
    t.runs.c.status != bindparam("b_status"),
    t.runs.c.status != "done",
    t.runs.c.status != "cancelled",
)
_MOVE_RUN_FROM = _MOVE_RUN.where(t.runs.c.status == bindparam("b_from"))


class RunMoves(StoreBase):
    def _move_run(
        self,
        conn: Connection,
        run_id: str,
        status: str,
        *,
        only_from: str | None = None,
        result: str | None = None,
        error: str | None = None,
        after: Sequence[NewEvent] = (),
    ) -> bool:
        """Move the run to `status` (compare-and-set); False when it did not move. Its event
        follows the events `after`, which are recorded whether it moved or not: all of them in
        one statement (a decision's whole cost is a handful of statements)."""
        values = {"status": status, "result": result, "error": error, "updated_at": self.clock()}
        where = {"b_run": run_id, "b_status": status}
        if only_from is None:
            changed = self._execute(conn, _MOVE_RUN, {**where, **values})
        else:
            changed = self._execute(conn, _MOVE_RUN_FROM, {**where, "b_from": only_from, **values})
        moved = changed.rowcount > 0
        events = list(after)
        if moved:
            data = {k: v for k, v in {"result": result, "error": error}.items() if v is not None}
            events.append((run_id, f"run.{status}", data))
        if events:
            self._events(conn, events)
        return moved

    def _wake(self, conn: Connection, event: NewEvent) -> None:
        """Record `event`, which gives its run work again, and move the run from waiting to
        running: a restart resumes exactly the runs marked running."""
        run_id = event[0]
        assert run_id is not None, "only an event of a run wakes it"
        self._move_run(conn, run_id, "running", only_from="waiting", after=[event])
