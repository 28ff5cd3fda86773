"""What each task has learnt — results, feedback, answers, its children's reports — kept out of
the checkpointed board, so that a step's checkpoint costs the same at step 200 as at step 1.

A note is written once per key: the step that wrote it (``step 7``) or the child it reports
(``report t1.2``). A step replayed after a crash writes the same keys again, and nothing is added.
The order a task learnt things in is the order its notes were first written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, tuple_
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


class Notes(StoreBase):
    async def add_notes(self, run_id: str, notes: Sequence[Note]) -> None:
        """Record `notes` in one transaction, leaving out every key already there."""
        if not notes:
            return
        c = t.notes.c

        def add(conn: Connection) -> None:
            keys = [(note.task_id, note.key) for note in notes]
            written = select(c.task_id, c.key).where(
                c.run_id == run_id, tuple_(c.task_id, c.key).in_(keys)
            )
            seen: set[tuple[str, str]] = {(row.task_id, row.key) for row in conn.execute(written)}
            new: list[dict[str, object]] = []
            for note in notes:
                if (note.task_id, note.key) not in seen:
                    seen.add((note.task_id, note.key))
                    new.append(
                        {
                            "run_id": run_id,
                            "task_id": note.task_id,
                            "key": note.key,
                            "text": note.text,
                            "created_at": self.clock(),
                        }
                    )
            if new:
                conn.execute(insert(t.notes), new)

        await self.write(add)

    async def task_notes(self, run_id: str, task_id: str) -> list[str]:
        """The notes of one task, in the order it learnt them."""
        c = t.notes.c
        query = select(c.text).where(c.run_id == run_id, c.task_id == task_id).order_by(c.id)
        return list(await self.read(lambda conn: conn.execute(query).scalars().all()))

    async def run_notes(self, run_id: str) -> dict[str, list[str]]:
        """Task id → its notes, in order, for every task of the run that has some."""
        c = t.notes.c
        query = select(c.task_id, c.text).where(c.run_id == run_id).order_by(c.id)
        found: dict[str, list[str]] = {}
        for task_id, text in await self.read(lambda conn: conn.execute(query).all()):
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
