"""What each task has learnt — results, feedback, answers, its children's reports — kept out of
the checkpointed board, so that a step's checkpoint costs the same at step 200 as at step 1.

A note is written once per key: the step that wrote it (``step 7``) or the child it reports
(``report t1.2``). A step replayed after a crash writes the same keys again, and nothing is added.
The order a task learnt things in is the order its notes were first written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, select, tuple_
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from qapten.store import tables as t
from qapten.store.base import StoreBase


@dataclass(frozen=True)
class Note:
    task_id: str
    key: str
    """Unique in the task: what wrote the note (see `step_key`, `report_key`)."""
    text: str


def step_key(step: int) -> str:
    """The key of the note a task's act at `step` leaves (each step acts once)."""
    return f"step {step}"


def report_key(child_id: str) -> str:
    """The key of the note that reports child `child_id`'s end to its manager."""
    return f"report {child_id}"


_c = t.notes.c
# Built once (see store.py). A key already there is left alone: the unique key of a note makes
# a replayed step's notes no-ops, in one statement.
_ADD = {
    "sqlite": sqlite_insert(t.notes).on_conflict_do_nothing(),
    "postgresql": postgresql_insert(t.notes).on_conflict_do_nothing(),
}
_TASK_NOTES = (
    select(_c.text)
    .where(_c.run_id == bindparam("b_run"), _c.task_id == bindparam("b_task"))
    .order_by(_c.id)
)
_RUN_NOTES = select(_c.task_id, _c.text).where(_c.run_id == bindparam("b_run")).order_by(_c.id)


class Notes(StoreBase):
    async def add_notes(self, run_id: str, notes: Sequence[Note]) -> None:
        """Record `notes` in one transaction, leaving out every key already there."""
        if notes:
            await self.write(lambda conn: self._add_notes(conn, run_id, notes))

    def _add_notes(self, conn: Connection, run_id: str, notes: Sequence[Note]) -> None:
        """`add_notes` in `conn`'s transaction (`notes` not empty)."""
        now = self.clock()
        rows = [
            {
                "run_id": run_id,
                "task_id": n.task_id,
                "key": n.key,
                "text": n.text,
                "created_at": now,
            }
            for n in notes
        ]
        self._execute(conn, _ADD[self.engine.dialect.name], rows)

    async def run_notes(self, run_id: str) -> dict[str, list[str]]:
        """Task id → its notes, in order, for every task of the run that has some."""
        found: dict[str, list[str]] = {}
        rows = await self.read(lambda conn: conn.execute(_RUN_NOTES, {"b_run": run_id}).all())
        for task_id, text in rows:
            found.setdefault(task_id, []).append(text)
        return found

    async def forget_notes(self, run_id: str, texts: Mapping[str, Sequence[str]]) -> None:
        """Delete, per task id, the notes with these texts (a retry takes reports back)."""
        c = t.notes.c
        pairs = [(task_id, text) for task_id, gone in texts.items() for text in gone]
        if not pairs:
            return

        def forget(conn: Connection) -> None:
            conn.execute(
                delete(t.notes).where(c.run_id == run_id, tuple_(c.task_id, c.text).in_(pairs))
            )

        await self.write(forget)

    def _task_notes(self, conn: Connection, run_id: str, task_id: str) -> list[str]:
        """The task's notes, in the order it learnt them (in `conn`'s transaction)."""
        params = {"b_run": run_id, "b_task": task_id}
        return [row["text"] for row in self._execute(conn, _TASK_NOTES, params).rows]
