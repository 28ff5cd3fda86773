"""The words a role is shown at each step. Short on purpose: small local models read slowly."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from qapten.acts import ActSpec
from qapten.board import Task
from qapten.orgchart import OrgChart


def system_prompt(chart: OrgChart, role_name: str, menu: Sequence[ActSpec]) -> str:
    role = chart.roles[role_name]
    manager = chart.manager(role_name)
    boss = f"{manager.title} ({manager.name})" if manager else "the human orchestrator"
    lines = [
        chart.prompt_text(role_name).strip(),
        "",
        f"You are {role.title} ({role.name}) at {chart.name}. You report to {boss}.",
    ]
    reports = chart.reports(role_name)
    if reports:
        team = ", ".join(f"{r.name} ({r.title})" for r in reports)
        lines.append(f"Your direct reports: {team}.")
    acts = ", ".join(spec.wire_name for spec in menu)
    lines.append(
        f"At each turn choose exactly one act by calling one tool ({acts}). "
        "A human may approve, reject, edit or ask you to revise what you propose."
    )
    return "\n".join(lines)


def task_prompt(mission: str, task: Task, requester: str, notes: Sequence[str]) -> str:
    """The task, and `notes`: what the role has learnt on it so far (kept in the store)."""
    lines = [f"Mission: {mission}", f"Your task (from {requester}): {task['brief']}"]
    if notes:
        lines.append("What happened so far:")
        lines.extend(f"{i}. {note}" for i, note in enumerate(notes, 1))
    lines.append("Choose your next act.")
    return "\n".join(lines)


def messages_for(
    chart: OrgChart, mission: str, task: Task, menu: Sequence[ActSpec], notes: Sequence[str]
) -> list[BaseMessage]:
    manager = chart.manager(task["role"])
    requester = manager.name if manager else "the human orchestrator"
    return [
        SystemMessage(system_prompt(chart, task["role"], menu)),
        HumanMessage(task_prompt(mission, task, requester, notes)),
    ]


def retry_message(error: str, raw: str) -> HumanMessage:
    return HumanMessage(
        f"Your previous answer could not be used: {error}\n"
        f"Your previous answer was: {raw[:500]}\n"
        "Answer again by calling exactly one tool with valid arguments."
    )
