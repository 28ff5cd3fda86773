"""What one step of a role reads and leaves behind, each in one round trip to the database.

`think` reads the proposal its step made already, if any (a step replayed after a crash finds it
and never asks the model again), and otherwise what the task has learnt, for the prompt. `act`
records the end of its tool call, the note the role learns and the events of the task's outcome
in one transaction: they are all known at once, and each of them on its own is safe to replay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection

from qapten.proposals import Proposal
from qapten.store import tables as t
from qapten.store.base import _proposal
from qapten.store.journal import FinishedCall, Journal
from qapten.store.notes import Note, Notes

StepEvent = tuple[str, Mapping[str, Any]]
"""An event's type and data."""

# Built once (see store.py).
_STEP_PROPOSAL = select(t.proposals).where(
    t.proposals.c.run_id == bindparam("b_run"),
    t.proposals.c.task_id == bindparam("b_task"),
    t.proposals.c.step == bindparam("b_step"),
)


class Steps(Journal, Notes):
    async def recall_step(
        self, run_id: str, task_id: str, step: int
    ) -> tuple[Proposal | None, list[str]]:
        """The proposal the task's `step` made already; or, while there is none, the task's
        notes in the order it learnt them: what a step's think needs, in one read."""

        def recall(conn: Connection) -> tuple[Proposal | None, list[str]]:
            params = {"b_run": run_id, "b_task": task_id, "b_step": step}
            row = self._execute(conn, _STEP_PROPOSAL, params).first
            if row is not None:
                return _proposal(row), []
            return None, self._task_notes(conn, run_id, task_id)

        return await self.read(recall)

    async def record_act(
        self,
        run_id: str,
        *,
        finished: FinishedCall | None = None,
        notes: Sequence[Note] = (),
        events: Sequence[StepEvent] = (),
    ) -> None:
        """Record what an act led to, in one transaction: how its tool call ended, the notes
        (keys already there are left out), then the `events`. Nothing to record, no write."""
        if finished is None and not notes and not events:
            return

        def record(conn: Connection) -> None:
            if finished is not None:
                self._finish_call(conn, finished)
            if notes:
                self._add_notes(conn, run_id, notes)
            for type_, data in events:
                self._event(conn, run_id, type_, data)

        await self.write(record)
