"""Render a run for people: a Rich tree of who did what, the tokens spent, how it ended."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.tree import Tree

from qapten.board import Task
from qapten.store import Run

if TYPE_CHECKING:
    from qapten.swarm import Swarm

STATUS_STYLE = {
    "done": "green",
    "failed": "red",
    "waiting": "yellow",
    "delegated": "cyan",
    "thinking": "blue",
    "acting": "blue",
}


def task_tree(tasks: Sequence[Task], *, title: str = "tasks", width: int = 100) -> Tree:
    """A tree with one node per task, children under their parent; agent text is escaped."""
    by_id = {task["id"]: task for task in tasks}
    tree = Tree(escape(title))

    def add(parent: Tree, task: Task) -> None:
        style = STATUS_STYLE.get(task["status"], "white")
        outcome = task["result"] if task["status"] == "done" else task["error"]
        line = f"[bold]{escape(task['role'])}[/] {escape(task['id'])} [{style}]{task['status']}[/]"
        line += f" — {escape(_short(task['brief'], width))}"
        if outcome:
            line += f"\n[dim]→ {escape(_short(outcome, width))}[/]"
        node = parent.add(line)
        for child in task["children"]:
            add(node, by_id[child])

    for task in tasks:
        if task["parent"] is None:
            add(tree, task)
    return tree


def _short(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


async def show_outcome(swarm: Swarm, run: Run, console: Console) -> None:
    """The task tree, the tokens spent and the root's deliverable (or why the run ended)."""
    tasks = await swarm.tasks(run.id)
    console.print(task_tree(tasks, title=f"run {run.id}: {run.status}"))
    tokens = await swarm.tokens(run.id)
    if tokens:
        spent = ", ".join(f"{role} {count}" for role, count in sorted(tokens.items()))
        console.print(f"tokens: {spent} (total {sum(tokens.values())})")
    root = tasks[0] if tasks else None
    if run.status == "done" and root is not None and root["result"]:
        console.print(Panel(escape(root["result"]), title="deliverable"))
    elif run.error:
        console.print(f"[red]run {run.status}: {escape(run.error)}[/]")
