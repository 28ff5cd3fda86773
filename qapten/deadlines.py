"""Silence is not consent: proposals that nobody decides in time expire or escalate.

A role's ``deadlines`` in the chart (per kind of act, per tool, or ``default``) give each new
pending proposal an ``expires_at`` and, with ``remind_before``, a ``remind_at`` (`terms_for`, in
the insert itself). `apply_deadlines` then does what is due, each change a compare-and-set on
the proposal row, so that a deadline and a human decision landing at once cannot both win:

* a reminder: one ``proposal.reminder`` event per deadline, before it;
* ``on_expiry: reject`` (the default): the proposal becomes ``expired`` (``decided_by``
  ``policy:deadline``); it is never executed, the role is told and thinks again;
* ``on_expiry: escalate``: the proposal stays pending but moves up one level, with a new
  deadline: to the deciders of the manager of the role (``escalated_to``), from the root role
  to the admins only (`ADMINS`); when the admins miss their deadline too, it expires.

The swarm applies deadlines before each decision, and in the background every few seconds
(`Sweeper`); tests advance a fake clock and call `Swarm.expire_due` instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from qapten.orgchart import OrgChart
from qapten.policy import Deadline, OnExpiry, duration_text, rule_for
from qapten.proposals import ADMINS, Proposal
from qapten.store import Store

logger = logging.getLogger(__name__)


def deadline_of(chart: OrgChart, proposal: Proposal) -> Deadline | None:
    role = chart.roles.get(proposal.role)
    return None if role is None else rule_for(role.deadlines, proposal.kind, proposal.act)


def terms_for(chart: OrgChart, proposal: Proposal) -> Proposal:
    """`proposal` with the deadline and quorum its role's rules give it (from its creation)."""
    role = chart.roles.get(proposal.role)
    if role is None:
        return proposal
    deadline = deadline_of(chart, proposal)
    quorum = rule_for(role.quorum, proposal.kind, proposal.act)
    if deadline is None and quorum is None:
        return proposal
    expires, remind = _times(proposal.created_at, deadline) if deadline else (None, None)
    update = {"expires_at": expires, "remind_at": remind, "quorum": quorum}
    return proposal.model_copy(update=update)


def _times(start: datetime, deadline: Deadline) -> tuple[datetime, datetime | None]:
    """The deadline and the reminder time of a wait that starts at `start`."""
    expires = start + deadline.expires_after
    return expires, None if deadline.remind_before is None else expires - deadline.remind_before


def escalation_target(chart: OrgChart, proposal: Proposal) -> str | None:
    """Who decides `proposal` once it escalates: the manager of whoever decides it now, the
    admins above the root role, and nobody above the admins (None: it expires)."""
    current = proposal.escalated_to or proposal.role
    if current == ADMINS:
        return None
    role = chart.roles.get(current)
    return (role.reports_to if role is not None else None) or ADMINS


async def apply_deadlines(store: Store, chart: OrgChart) -> set[str]:
    """Send the reminders that are due and expire or escalate the proposals past their deadline.
    Returns the runs that have work again (an expired proposal wakes its task)."""
    now = store.clock()
    woken: set[str] = set()
    for proposal in await store.due_proposals(now):
        deadline = deadline_of(chart, proposal)
        if proposal.expires_at is None or proposal.expires_at > now:
            await store.remind(proposal)  # only its reminder is due
            continue
        escalate = deadline is not None and deadline.on_expiry is OnExpiry.ESCALATE
        target = escalation_target(chart, proposal) if escalate else None
        if deadline is not None and target is not None:
            expires, remind = _times(now, deadline)  # the new deciders get the whole time
            await store.escalate(proposal, to=target, expires_at=expires, remind_at=remind)
        elif await store.expire(proposal, reason=_expiry_reason(proposal, deadline)):
            woken.add(proposal.run_id)
    return woken


def _expiry_reason(proposal: Proposal, deadline: Deadline | None) -> str:
    waited = (
        "by its deadline" if deadline is None else f"within {duration_text(deadline.expires_after)}"
    )
    reason = f"no decision {waited}"
    if proposal.escalated_to == ADMINS:
        return f"{reason}, even escalated to the admins"
    if proposal.escalated_to is not None:
        return f"{reason}, even escalated to {proposal.escalated_to}"
    return reason


class Sweeper:
    """Calls `sweep` every `interval` seconds in a background task, until stopped.

    A failing sweep is logged and tried again next time: a database that is briefly busy must
    not stop deadlines for good.
    """

    def __init__(self, sweep: Callable[[], Awaitable[object]], interval: float) -> None:
        self._sweep = sweep
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            try:
                await self._sweep()
            except Exception:
                logger.exception("applying proposal deadlines failed; trying again")
            await asyncio.sleep(self.interval)
