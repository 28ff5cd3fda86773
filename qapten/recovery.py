"""Taking a failed run up again: which tasks reopen, and in what state (for `Swarm.retry`)."""

from __future__ import annotations

from typing import Any

from qapten.acts import DELEGATE
from qapten.board import Board, Task, TaskStatus, with_notes
from qapten.roles import child_report
from qapten.store import Store


async def last_delegations(store: Store, run_id: str) -> dict[str, int]:
    """Task id → how many tasks its latest carried-out delegation made."""
    sizes: dict[str, int] = {}
    for proposal in await store.list_proposals(run_id=run_id):  # oldest first
        if proposal.act == DELEGATE and proposal.status.executes:
            payload = proposal.decided_payload or proposal.payload
            sizes[proposal.task_id] = len(payload["tasks"])
    return sizes


async def reopen(store: Store, run_id: str, board: Board) -> dict[str, dict[str, Any]]:
    """The board patches that take a failed run up again (`reopen_failed`); the failure reports
    its reopened tasks forget are taken out of the store, where the notes live."""
    notes = await store.run_notes(run_id)
    tasks = {task["id"]: task for task in with_notes(board["tasks"].values(), notes)}
    seen = Board(mission=board["mission"], root=board["root"], steps=board["steps"], tasks=tasks)
    patches = reopen_failed(seen, await last_delegations(store, run_id))
    forgotten: dict[str, list[str]] = {}
    for task_id, patch in patches.items():
        kept = set(patch.pop("notes"))
        forgotten[task_id] = [note for note in notes.get(task_id, []) if note not in kept]
    await store.forget_notes(run_id, forgotten)
    return patches


def reopen_failed(board: Board, delegations: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Patches that put a failed run's failed work back in hand, on the board as people see it
    (each task with its notes, `with_notes`); a patch's ``notes`` are those the task keeps.

    From the root down along the failure: a failed task thinks again; when children of its
    latest delegation failed too, they are reopened and the task waits for them once more,
    its notes without their failure reports. A manager that failed after hearing "child failed"
    is so taken back to before it heard it, and learns the retried child's result instead.
    Failures a manager acted on (by delegating again) stay: the new children replaced them.
    """
    tasks = board["tasks"]
    patches: dict[str, dict[str, Any]] = {}

    def reopen(task: Task) -> bool:
        if task["status"] == TaskStatus.DELEGATED.value:
            for child in task["awaiting"]:
                reopen(tasks[child])
            return False
        if task["status"] != TaskStatus.FAILED.value:
            return False
        latest = task["children"][len(task["children"]) - delegations.get(task["id"], 0) :]
        again = [child for child in latest if reopen(tasks[child])]
        told = {child_report(tasks[child]) for child in again}
        patches[task["id"]] = {
            "status": (TaskStatus.DELEGATED if again else TaskStatus.THINKING).value,
            "awaiting": again,
            "notes": [note for note in task.get("notes", []) if note not in told],
            "error": None,
        }
        return True

    reopen(tasks[board["root"]])
    return patches
