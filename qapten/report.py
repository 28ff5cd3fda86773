"""Render a run's task board for people: a Rich tree of who did what, and how it ended."""

from __future__ import annotations

from collections.abc import Sequence

from rich.markup import escape
from rich.tree import Tree

from qapten.board import Task

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
