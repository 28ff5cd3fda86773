"""The notifier: follows the event log and delivers its notices to the chat channels and
webhooks, durably.

Each pass reads the events past the notifier's cursor and plans a delivery for each notice
(`NOTICE_TYPES`) and each destination the routes give it (qapten.channels.settings), moving
the cursor in the same transaction; then it sends the deliveries that are due. A failed try is
tried again after ``retry_seconds``, doubling each time, up to ``max_attempts`` tries; then the
delivery is failed for good, with a ``notice.failed`` event. Every try is in the delivery log
(qapten.store.deliveries), which survives restarts: a notice planned before a crash is sent
after it.

Notices about one proposal reach one destination in order (a decision's update never overtakes
the message it updates); different destinations are served side by side, so a slow receiver
delays only its own notices.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Mapping
from datetime import timedelta

from qapten.api.links import LINKS_PATH, LinkSigner
from qapten.channels.base import Channel, DeliveryFailed
from qapten.channels.notices import Notice
from qapten.channels.settings import NOTICE_TYPES, ChannelSettings
from qapten.errors import ProposalNotFound, RunNotFound
from qapten.proposals import ALLOWED_DECISIONS, Proposal
from qapten.store import Store
from qapten.store.base import Event
from qapten.store.deliveries import Delivery, Planned

logger = logging.getLogger(__name__)

CURSOR = "qapten.notifier"
READ_AT_ONCE = 500
SEND_AT_ONCE = 200
SEND_TIMEOUT = 30.0
"""Seconds one try may take, all included; a claimed delivery is held this long and more."""
MAX_RETRY_WAIT = 3600.0
MAX_PASS_WAIT = 30.0


class LinkMaker:
    """Makes the one-click decision links a notice carries (qapten.api.links)."""

    def __init__(self, signer: LinkSigner, public_url: str) -> None:
        self._signer = signer
        self._base = public_url.rstrip("/")

    def links(self, proposal: Proposal, who: str) -> dict[str, str]:
        """Approve and reject links for `proposal`, as `who` (those its kind takes)."""
        allowed = ALLOWED_DECISIONS[proposal.kind]
        return {
            decision: self._base + LINKS_PATH + self._signer.make(proposal.id, who, decision)
            for decision in ("approve", "reject")
            if decision in allowed
        }


class Notifier:
    def __init__(
        self,
        store: Store,
        settings: ChannelSettings,
        channels: Mapping[str, Channel],
        *,
        links: LinkMaker | None = None,
        poll_seconds: float = 0.5,
    ) -> None:
        self.store = store
        self.settings = settings
        self.channels = dict(channels)
        self._links = links
        self._poll = poll_seconds
        self._links_for = {
            f"webhook:{hook.name}": hook.links_for for hook in settings.webhooks if hook.links_for
        }
        self._events = {f"webhook:{hook.name}": hook.events for hook in settings.webhooks}

    async def run(self) -> None:
        """Plan and send, pass after pass, until cancelled. A pass that fails (the database
        is away) is logged and the next one tries again: the notifier outlives the outage."""
        failures = 0
        while True:
            try:
                await self.step()
                failures = 0
            except Exception:  # anything: the loop must go on
                failures += 1
                logger.exception("notifier: a pass failed (%d in a row); trying again", failures)
            # Spaced out while failing, so that an outage is not a flood of the same log line.
            await asyncio.sleep(min(self._poll * 2**failures, MAX_PASS_WAIT))

    async def step(self) -> tuple[int, int]:
        """One pass: (deliveries planned, deliveries tried)."""
        return await self.plan(), await self.send_due()

    # -- planning ---------------------------------------------------------------------------

    async def plan(self) -> int:
        """Plan the deliveries of the events past the cursor."""
        planned_total = 0
        while True:
            read_from = await self.store.cursor(CURSOR)
            if read_from is None:  # the first pass ever: from now on, not the history
                read_from = await self.store.start_cursor(CURSOR)
            events = await self.store.events(after=read_from, limit=READ_AT_ONCE)
            if not events:
                return planned_total
            planned = [
                Planned(destination, event.id, event.type, event.run_id, _proposal_id(event))
                for event in events
                if event.type in NOTICE_TYPES
                for destination in await self._destinations(event)
            ]
            if not await self.store.plan_deliveries(CURSOR, read_from, events[-1].id, planned):
                continue  # another notifier read them first; it planned the same rows
            planned_total += len(planned)

    async def _destinations(self, event: Event) -> list[str]:
        proposal_id = _proposal_id(event)
        if proposal_id is None:
            destinations = self.settings.destinations()
        else:
            try:
                proposal = await self.store.get_proposal(proposal_id)
            except ProposalNotFound:
                return []
            kind = proposal.kind.value
            destinations = self.settings.route(proposal.role, kind, proposal.act)
        return [d for d in destinations if event.type in self._wanted(d)]

    def _wanted(self, destination: str) -> tuple[str, ...]:
        kind = destination.partition(":")[0]
        if kind == "webhook":
            return self._events.get(destination, ())
        section = self.settings.slack if kind == "slack" else self.settings.telegram
        return () if section is None else section.events

    # -- sending ----------------------------------------------------------------------------

    async def send_due(self) -> int:
        """Try every due delivery once: in order at each destination, destinations at once."""
        due = await self.store.due_deliveries(limit=SEND_AT_ONCE)
        by_destination: dict[str, list[Delivery]] = defaultdict(list)
        for delivery in due:
            by_destination[delivery.destination].append(delivery)
        tried = await asyncio.gather(*(self._send_in_order(q) for q in by_destination.values()))
        return sum(tried)

    async def _send_in_order(self, queue: list[Delivery]) -> int:
        tried = 0
        for delivery in queue:
            if await self.store.waiting_before(delivery):
                continue  # the message it follows is not out yet
            tried += await self._try(delivery)
        return tried

    async def _try(self, delivery: Delivery) -> int:
        hold = timedelta(seconds=SEND_TIMEOUT * 2)
        if not await self.store.claim_delivery(delivery, hold=hold):
            return 0  # another notifier has it
        attempt = delivery.attempts + 1
        try:
            notice = await self._notice(delivery)
            kind, _, target = delivery.destination.partition(":")
            channel = self.channels.get(kind)
            if channel is None:
                raise DeliveryFailed(f"no {kind} channel is configured", permanent=True)
            posted = None
            if delivery.proposal_id is not None and delivery.event_type != "proposal.created":
                posted = await self.store.posted_message(delivery.proposal_id, delivery.destination)
            message = await asyncio.wait_for(
                channel.send(notice, target, posted), timeout=SEND_TIMEOUT
            )
        except DeliveryFailed as exc:
            await self._failed(
                delivery, attempt, str(exc), permanent=exc.permanent, wait=exc.retry_after
            )
        except TimeoutError:
            await self._failed(delivery, attempt, f"no answer in {SEND_TIMEOUT:g} s")
        except Exception as exc:  # a bug in one channel must not stop the others
            logger.exception("notifier: delivery %s to %s", delivery.id, delivery.destination)
            await self._failed(delivery, attempt, f"{type(exc).__name__}: {exc}")
        else:
            await self.store.delivered(delivery.id, message)
        return 1

    async def _failed(
        self,
        delivery: Delivery,
        attempt: int,
        reason: str,
        *,
        permanent: bool = False,
        wait: float | None = None,
    ) -> None:
        if permanent or attempt >= self.settings.max_attempts:
            logger.warning(
                "notifier: %s of event %s failed for good after %d tries: %s",
                delivery.destination,
                delivery.event_id,
                attempt,
                reason,
            )
            await self.store.retry_delivery(delivery, reason, at=None)
            return
        backoff = self.settings.retry_seconds * 2 ** (attempt - 1)
        seconds = min(max(backoff, wait or 0.0), MAX_RETRY_WAIT)
        at = self.store.clock() + timedelta(seconds=seconds)
        await self.store.retry_delivery(delivery, reason, at=at)

    async def _notice(self, delivery: Delivery) -> Notice:
        event = await self.store.event(delivery.event_id)
        if event is None:
            raise DeliveryFailed(f"event {delivery.event_id} is gone", permanent=True)
        run = None
        if event.run_id is not None:
            try:
                run = await self.store.get_run(event.run_id)
            except RunNotFound:
                run = None
        proposal = None
        if delivery.proposal_id is not None:
            proposal = await self.store.get_proposal(delivery.proposal_id)
        notice = Notice(event, run, proposal)
        who = self._links_for.get(delivery.destination)
        if who and self._links is not None and proposal is not None and notice.decisions():
            links = self._links.links(proposal, who)
            notice = Notice(event, run, proposal, links)
        return notice


def _proposal_id(event: Event) -> str | None:
    if not event.type.startswith("proposal."):
        return None
    value = event.data.get("proposal_id")
    return value if isinstance(value, str) else None
