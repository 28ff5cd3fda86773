"""Taking a failed run up again: which tasks reopen, and in what state (for `Swarm.retry`)."""

from __future__ import annotations

from typing import Any

from qapten.acts import DELEGATE
from qapten.board import Board, Task, TaskStatus
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


def reopen_failed(board: Board, delegations: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Board patches that put a failed run's failed work back in hand.

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
            "notes": [note for note in task["notes"] if note not in told],
            "error": None,
        }
        return True

    reopen(tasks[board["root"]])
    return patches
