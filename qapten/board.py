"""The run's task board: the whole LangGraph state, kept small (ids, statuses, short texts).

Large payloads (tool arguments, drafts) live in the proposals table, and what each task has learnt
(its notes) in the notes table, not here, so checkpoints stay small (DESIGN §4, trap 4): LangGraph
writes the whole board at every step, so anything on it that grows with a task's history would
make a long task's checkpoints grow with it, and their sum with its square.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Annotated, Any, NotRequired, TypedDict


class TaskStatus(StrEnum):
    THINKING = "thinking"
    """The role must choose its next act (a model call)."""
    WAITING = "waiting"
    """A proposal waits for a human."""
    ACTING = "acting"
    """A decided (or auto-approved) proposal is to be carried out."""
    DELEGATED = "delegated"
    """Waiting for child tasks."""
    DONE = "done"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (TaskStatus.DONE, TaskStatus.FAILED)


class Task(TypedDict):
    id: str
    parent: str | None
    role: str
    brief: str
    status: str
    steps: int
    """Model calls made for this task so far."""
    revisions: int
    children: list[str]
    awaiting: list[str]
    """Children of the latest delegation, whose results the task waits for."""
    notes: NotRequired[list[str]]
    """What the role has learnt since the task began: results, feedback, answers. Never on the
    board (the store keeps them, qapten/store/notes.py); filled in by `with_notes` for people."""
    proposal: str | None
    result: str | None
    error: str | None


def new_task(task_id: str, role: str, brief: str, parent: str | None = None) -> Task:
    return Task(
        id=task_id,
        parent=parent,
        role=role,
        brief=brief,
        status=TaskStatus.THINKING.value,
        steps=0,
        revisions=0,
        children=[],
        awaiting=[],
        proposal=None,
        result=None,
        error=None,
    )


def with_notes(tasks: Iterable[Task], notes: Mapping[str, list[str]]) -> list[Task]:
    """The tasks as people see them: each with its notes (from the store)."""
    return [{**task, "notes": list(notes.get(task["id"], []))} for task in tasks]


def merge_tasks(
    current: Mapping[str, Task], patches: Mapping[str, Mapping[str, Any]]
) -> dict[str, Task]:
    """Reducer: each update carries field patches per task id; parallel steps touch other tasks."""
    merged: dict[str, Any] = dict(current)
    for task_id, patch in patches.items():
        merged[task_id] = {**merged.get(task_id, {}), **patch}
    return merged


class Board(TypedDict):
    mission: str
    root: str
    tasks: Annotated[dict[str, Task], merge_tasks]
    steps: Annotated[int, operator.add]
    """Model calls made in the whole run."""


class StepInput(TypedDict):
    """What `dispatch` sends a role node: one task and which half of a step to do."""

    phase: str
    mission: str
    task: Task


ROOT_TASK_ID = "t1"
