"""One step of a role, in two halves that never share a node run:

* **think** asks the model for one act and records it as a proposal (auto-approved when the
  policy says so). The proposal is keyed by (task, step), so a replay after a crash finds it and
  never calls the model again (DESIGN §4, trap 1).
* **act** carries out whatever was decided: executes the approved (or edited) payload, or hands
  the rejection, revision request, answer or expiry back to the role for its next think. What the
  role learns from it is the step's note, kept in the store under the step's key (not on the
  checkpointed board): a replayed act writes the same key and adds nothing.

Waiting for a human is not a step at all: the task parks as ``waiting`` and `dispatch` picks it
up once the store shows a decision.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from langchain_core.messages import AIMessage

from qapten.acts import DELEGATE, DELIVER, InvalidChoice, parse_choice, raw_output, title_for
from qapten.board import Task, TaskStatus, new_task
from qapten.budget import BUDGET_ACT, budget_outcome, budget_proposal, over_budget
from qapten.context import SwarmContext, new_id
from qapten.journal import run_tool
from qapten.models import describe_failure, server_errors
from qapten.policy import AutonomyLevel
from qapten.prompts import messages_for, retry_message
from qapten.proposals import AUTO_DECIDER, Proposal, ProposalStatus, payload_hash
from qapten.store.journal import FinishedCall
from qapten.store.notes import Note, step_key
from qapten.store.steps import StepEvent
from qapten.testing import ROLE_METADATA_KEY

Patch = dict[str, Any]


class Outcome(NamedTuple):
    """What an act does to its task."""

    patch: Patch
    children: list[Task]
    note: str | None
    """What the role learns, if anything."""
    finished: FinishedCall | None = None
    """How the act's tool call ended, when it ran one now."""


def fail(reason: str) -> Patch:
    return {"status": TaskStatus.FAILED.value, "error": reason}


async def think(ctx: SwarmContext, run_id: str, mission: str, task: Task) -> tuple[Patch, int]:
    """Choose the task's next act. Returns the task patch and the model calls it cost."""
    role = ctx.chart.roles[task["role"]]
    step = task["steps"] + 1
    if step > role.max_steps:
        return fail(
            f"step limit reached: {role.name} may make {role.max_steps} model "
            "calls per task (max_steps in the org chart)"
        ), 0
    proposal, notes = await ctx.store.recall_step(run_id, task["id"], step)
    calls = 0
    if proposal is None:
        request = await over_budget(ctx, run_id, role.name)
        if request is not None:
            proposal = await budget_proposal(ctx, run_id, task["id"], role.name, step, request)
        else:
            proposal, calls, failure = await _ask_model(ctx, run_id, mission, task, step, notes)
            if proposal is None:
                return {**fail(failure), "steps": step}, calls
    waiting = proposal.status is ProposalStatus.PENDING
    return {
        "steps": step,
        "proposal": proposal.id,
        "status": (TaskStatus.WAITING if waiting else TaskStatus.ACTING).value,
    }, calls


async def _ask_model(
    ctx: SwarmContext, run_id: str, mission: str, task: Task, step: int, notes: list[str]
) -> tuple[Proposal | None, int, str]:
    role = ctx.chart.roles[task["role"]]
    menu = ctx.menus[role.name]
    reports = ctx.reports(role.name)
    messages = messages_for(ctx.chart, mission, task, menu, notes)
    config: Any = {
        "metadata": {ROLE_METADATA_KEY: role.name, "qapten_run": run_id, "qapten_task": task["id"]}
    }
    error = ""
    tokens = 0
    model = ctx.models[role.name]
    for attempt in range(1, ctx.max_output_retries + 2):
        try:
            answer: AIMessage = await model.ainvoke(messages, config=config)
        except server_errors() as exc:
            # The client retried already (backoff, Retry-After): the task fails with the reason,
            # the run can be retried later (`Swarm.retry`). Other exceptions are bugs: they rise.
            return None, attempt - 1, describe_failure(model, exc)
        tokens += answer.usage_metadata["total_tokens"] if answer.usage_metadata else 0
        try:
            choice = parse_choice(answer, menu, reports)
        except InvalidChoice as exc:
            error = str(exc)
            raw = raw_output(answer)
            await ctx.store.add_event(
                run_id,
                "model.invalid_output",
                {
                    "task_id": task["id"],
                    "role": role.name,
                    "attempt": attempt,
                    "error": error,
                    "raw": raw[:4000],
                },
            )
            messages = [*messages, retry_message(error, raw)]
            continue
        tool_name = choice.spec.name if choice.spec.tool is not None else None
        level = role.autonomy.level_for(choice.spec.kind, tool_name)
        auto = level is AutonomyLevel.AUTO
        digest = payload_hash(choice.args)
        proposal = Proposal(
            id=new_id("p"),
            run_id=run_id,
            task_id=task["id"],
            role=role.name,
            kind=choice.spec.kind,
            act=choice.spec.name,
            title=title_for(choice.spec, choice.args),
            payload=choice.args,
            payload_hash=digest,
            status=ProposalStatus.APPROVED if auto else ProposalStatus.PENDING,
            created_at=ctx.store.clock(),
            decided_at=ctx.store.clock() if auto else None,
            decided_by=AUTO_DECIDER if auto else None,
            decided_payload=choice.args if auto else None,
            approved_hash=digest if auto else None,
        )
        await ctx.store.create_proposal(proposal, step=step, tokens=tokens)
        if auto:
            ctx.born_decided.keep(proposal)
        return proposal, attempt, ""
    attempts = ctx.max_output_retries + 1
    return (
        None,
        attempts,
        (
            f"the model gave no usable answer in {attempts} tries; last problem: {error} "
            "(the raw answers are in the run's model.invalid_output events)"
        ),
    )


async def act(ctx: SwarmContext, run_id: str, task: Task) -> tuple[Patch, list[Task]]:
    """Carry out the decided proposal. Returns the task patch and any new child tasks.

    What it led to is recorded in one transaction: how its tool call ended, the note the role
    learns, and the events of the task's outcome.
    """
    outcome = await _carry_out(ctx, run_id, task)
    notes = (
        [] if outcome.note is None else [Note(task["id"], step_key(task["steps"]), outcome.note)]
    )
    events = [
        *outcome_events(task, outcome.patch),
        *delegation_events(task, outcome.children),
    ]
    await ctx.store.record_act(run_id, finished=outcome.finished, notes=notes, events=events)
    return outcome.patch, outcome.children


def outcome_events(task: Task, patch: Patch) -> list[StepEvent]:
    """A task that ends, whichever half of a step ended it, is one event in the audit log."""
    status = patch.get("status")
    if status == TaskStatus.DONE.value:
        return [("task.done", {"task_id": task["id"], "role": task["role"]})]
    if status == TaskStatus.FAILED.value:
        data = {"task_id": task["id"], "role": task["role"], "error": patch["error"]}
        return [("task.failed", data)]
    return []


def delegation_events(task: Task, children: list[Task]) -> list[StepEvent]:
    if not children:
        return []
    shown = [{"id": c["id"], "role": c["role"], "brief": c["brief"]} for c in children]
    return [("task.delegated", {"task_id": task["id"], "role": task["role"], "children": shown})]


async def _carry_out(ctx: SwarmContext, run_id: str, task: Task) -> Outcome:
    assert task["proposal"] is not None, "act needs a proposal"
    proposal = ctx.born_decided.take(task["proposal"]) or await ctx.store.get_proposal(
        task["proposal"]
    )
    role = ctx.chart.roles[task["role"]]
    status = proposal.status
    if proposal.act == BUDGET_ACT:
        patch, note = budget_outcome(proposal)
        return Outcome(patch, [], note)
    thinking = {"status": TaskStatus.THINKING.value}
    if status is ProposalStatus.ANSWERED:
        question = proposal.payload.get("question", "")
        return Outcome(
            thinking, [], f"You asked: {question!r}. The human answered: {proposal.feedback}"
        )
    if status is ProposalStatus.REVISION_REQUESTED:
        revisions = task["revisions"] + 1
        if revisions > role.max_revisions:
            limit = (
                f"revision limit reached: {role.name} may revise "
                f"{role.max_revisions} times (max_revisions in the org chart)"
            )
            return Outcome(fail(limit), [], None)
        asked = f"The human asked you to revise your proposal ({proposal.title})"
        return Outcome({**thinking, "revisions": revisions}, [], f"{asked}: {proposal.feedback}")
    if status is ProposalStatus.EXPIRED:  # silence is not consent: the act is dropped
        note = (
            f"Your proposal ({proposal.title}) expired: {proposal.feedback}. It was not "
            "carried out; choose another way."
        )
        return Outcome(thinking, [], note)
    if not status.executes:
        why = f": {proposal.feedback}" if proposal.feedback else ""
        note = (
            f"The human {status.value} your proposal ({proposal.title}){why}. "
            "Do not do it; choose another way."
        )
        return Outcome(thinking, [], note)

    payload = proposal.decided_payload if proposal.decided_payload is not None else proposal.payload
    if payload_hash(payload) != proposal.approved_hash:
        # Only the exact payload that was approved may run; anything else is refused loudly.
        await ctx.store.add_event(
            run_id,
            "act.refused",
            {"proposal_id": proposal.id, "reason": "payload does not match the approved hash"},
        )
        note = (
            f"Your proposal ({proposal.title}) was not executed: its payload changed "
            "after approval."
        )
        return Outcome(thinking, [], note)
    edited = " (as edited by the human)" if status is ProposalStatus.EDITED else ""
    if proposal.act == DELEGATE:
        return _delegate(task, payload)
    if proposal.act == DELIVER:
        return Outcome({"status": TaskStatus.DONE.value, "result": payload["result"]}, [], None)
    tool = next(spec.tool for spec in ctx.menus[role.name] if spec.name == proposal.act)
    assert tool is not None
    said, finished = await run_tool(ctx.store, tool, payload, proposal, ctx.workspace(run_id))
    return Outcome(thinking, [], f"You called {tool.name}{edited}: {said}", finished)


def _delegate(task: Task, payload: dict[str, Any]) -> Outcome:
    start = len(task["children"])
    children = [
        new_task(f"{task['id']}.{start + i}", a["to"], a["brief"], parent=task["id"])
        for i, a in enumerate(payload["tasks"], 1)
    ]
    names = ", ".join(f"{c['role']} ({c['id']})" for c in children)
    patch = {
        "status": TaskStatus.DELEGATED.value,
        "children": [*task["children"], *(c["id"] for c in children)],
        "awaiting": [c["id"] for c in children],
    }
    return Outcome(patch, children, f"You delegated to {names}.")


def child_report(child: Task) -> str:
    """What a manager is told when a child task ends."""
    if child["status"] == TaskStatus.DONE.value:
        return f"Result from {child['role']} ({child['id']}): {child['result']}"
    return f"Task {child['id']} for {child['role']} failed: {child['error']}"
