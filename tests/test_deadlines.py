"""Silence is not consent: deadlines, reminders, expiry and escalation, on a clock tests move."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from qapten import ProposalAlreadyDecided, ProposalStatus, Swarm
from qapten.api import ApiSettings, create_app
from qapten.api.settings import TokenSpec, token_digest
from qapten.deadlines import Sweeper
from qapten.errors import OrgChartError
from qapten.orgchart import OrgChart
from qapten.proposals import ADMINS, DEADLINE_DECIDER, Proposal
from qapten.testing import ScriptedChatModel, delegate, deliver, use

from .conftest import ORG, SwarmFactory, write_org

MINUTE = timedelta(minutes=1)


class FakeClock:
    """The swarm's clock in these tests: time moves only when a test says so."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
        self._held: tuple[int, timedelta] | None = None

    def __call__(self) -> datetime:
        if self._held is not None:
            reads, step = self._held
            self._held = (reads - 1, step)
            if reads == 1:
                self.settle()
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta

    def advance_at_read(self, reads: int, step: timedelta) -> None:
        """Move on by `step` when read for the `reads`-th time from now (1: the next read)."""
        self._held = (reads, step)

    def settle(self) -> None:
        """Make the move that `advance_at_read` still holds back, now."""
        if self._held is not None:
            self.now += self._held[1]
            self._held = None


def with_deadline(action: dict[str, Any]) -> Any:
    """The default chart where the CEO plans and delivers alone and the CTO's tool calls have
    `action` as their deadline."""

    def change(data: dict[str, Any]) -> None:
        data["roles"]["ceo"]["autonomy"] = {"plan": "auto", "deliverable": "auto"}
        data["roles"]["cto"]["deadlines"] = {"action": action}

    return change


def cto_writes(rounds: int = 1) -> ScriptedChatModel:
    return ScriptedChatModel(
        {
            "ceo": [delegate(cto="Write the plan"), deliver("all done")] * rounds,
            "cto": [
                use("workspace.write_file", path="plan.md", content="v1"),
                deliver("the plan could not be written"),
            ]
            * rounds,
        }
    )


async def pending_action(swarm: Swarm) -> Proposal:
    run = await swarm.start("Write the plan")
    [action] = await swarm.pending(run.id)
    assert action.kind == "action"
    return action


async def event_types(swarm: Swarm, run_id: str) -> list[str]:
    return [event.type for event in await swarm.events(run_id)]


async def test_silence_expires_an_action_which_never_runs_and_the_role_is_told(
    make_swarm: SwarmFactory, tmp_path: Path
) -> None:
    clock = FakeClock()
    org = write_org(tmp_path, with_deadline({"expires_after": "30m"}))
    model = cto_writes()
    swarm = make_swarm(model, org=org, clock=clock, sweep_interval=None)
    action = await pending_action(swarm)
    assert action.expires_at == clock.now + 30 * MINUTE

    clock.advance(30 * MINUTE - timedelta(seconds=1))
    await swarm.expire_due()
    assert (await swarm.proposal(action.id)).status == "pending"  # not yet
    clock.advance(timedelta(seconds=1))
    await swarm.expire_due()

    expired = await swarm.proposal(action.id)
    assert expired.status == ProposalStatus.EXPIRED and not expired.status.executes
    assert (expired.decided_by, expired.feedback) == (DEADLINE_DECIDER, "no decision within 30m")
    done = await swarm.wait(action.run_id, timeout=10)  # the task goes on: the CTO delivers
    assert done.result == "all done"
    assert await swarm.tool_calls(action.run_id) == []  # expired proposals executed: 0
    assert not swarm.workspace(action.run_id).root.joinpath("plan.md").exists()
    told = model.calls_for("cto")[1].prompt
    assert "expired: no decision within 30m. It was not carried out" in told
    with pytest.raises(ProposalAlreadyDecided, match="already expired by policy:deadline"):
        await swarm.decide(action.id, "approve")
    assert "proposal.expired" in await event_types(swarm, action.run_id)


async def test_a_late_decision_loses_to_the_deadline_even_before_any_sweep(
    make_swarm: SwarmFactory, tmp_path: Path
) -> None:
    clock = FakeClock()
    org = write_org(tmp_path, with_deadline({"expires_after": "10m"}))
    swarm = make_swarm(cto_writes(), org=org, clock=clock, sweep_interval=None)
    action = await pending_action(swarm)
    clock.advance(10 * MINUTE)
    # The store itself refuses it: its compare-and-set wants the deadline still ahead.
    with pytest.raises(ProposalAlreadyDecided, match="expired"):
        await swarm.store.decide(action.id, status=ProposalStatus.APPROVED, decided_by="late")
    with pytest.raises(ProposalAlreadyDecided, match="expired"):
        await swarm.decide(action.id, "approve", by="late")  # which first applies the deadline
    await swarm.wait(action.run_id, timeout=10)
    assert await swarm.tool_calls(action.run_id) == []


async def test_reminders_fire_once_before_the_deadline(
    make_swarm: SwarmFactory, tmp_path: Path
) -> None:
    clock = FakeClock()
    org = write_org(tmp_path, with_deadline({"expires_after": "30m", "remind_before": "10m"}))
    swarm = make_swarm(cto_writes(), org=org, clock=clock, sweep_interval=None)
    action = await pending_action(swarm)

    async def reminders() -> list[dict[str, Any]]:
        events = await swarm.events(action.run_id)
        return [event.data for event in events if event.type == "proposal.reminder"]

    clock.advance(19 * MINUTE)
    await swarm.expire_due()
    assert await reminders() == []
    clock.advance(MINUTE)
    for _ in range(3):  # however often deadlines are looked at
        await swarm.expire_due()
    [reminder] = await reminders()
    assert reminder["proposal_id"] == action.id
    assert datetime.fromisoformat(reminder["expires_at"]) == action.created_at + 30 * MINUTE
    assert (await swarm.proposal(action.id)).status == "pending"
    clock.advance(10 * MINUTE)
    await swarm.expire_due()
    assert len(await reminders()) == 1
    types = await event_types(swarm, action.run_id)
    assert types.index("proposal.reminder") < types.index("proposal.expired")


async def test_escalation_climbs_to_the_manager_then_the_admins_then_expires(
    make_swarm: SwarmFactory, tmp_path: Path
) -> None:
    clock = FakeClock()
    rule = {"expires_after": "1h", "remind_before": "15m", "on_expiry": "escalate"}
    org = write_org(tmp_path, with_deadline(rule))
    swarm = make_swarm(cto_writes(), org=org, clock=clock, sweep_interval=None)
    action = await pending_action(swarm)
    assert action.escalated_to is None

    async def an_hour_passes() -> None:  # in two steps: a reminder is due on the way
        for step in (45 * MINUTE, 15 * MINUTE):
            clock.advance(step)
            await swarm.expire_due()

    await an_hour_passes()
    to_ceo = await swarm.proposal(action.id)
    assert (to_ceo.status, to_ceo.escalated_to) == ("pending", "ceo")
    assert to_ceo.expires_at == clock.now + 60 * MINUTE  # the CEO's deciders get the whole hour

    await an_hour_passes()
    to_admins = await swarm.proposal(action.id)
    assert (to_admins.status, to_admins.escalated_to) == ("pending", ADMINS)

    await an_hour_passes()
    expired = await swarm.proposal(action.id)
    assert expired.status == "expired"
    assert expired.feedback == "no decision within 1h, even escalated to the admins"
    events = await swarm.events(action.run_id)
    moves = [(e.data["from"], e.data["to"]) for e in events if e.type == "proposal.escalated"]
    assert moves == [("cto", "ceo"), ("ceo", ADMINS)]
    assert [e.type for e in events].count("proposal.reminder") == 3  # one per deadline
    await swarm.wait(action.run_id, timeout=10)
    assert await swarm.tool_calls(action.run_id) == []


async def test_an_escalated_proposal_is_decided_by_the_deciders_it_went_up_to(
    make_swarm: SwarmFactory, tmp_path: Path
) -> None:
    clock = FakeClock()
    org = write_org(tmp_path, with_deadline({"expires_after": "30m", "on_expiry": "escalate"}))
    swarm = make_swarm(cto_writes(), org=org, clock=clock, sweep_interval=None)
    tokens = {
        name: TokenSpec(name=name, sha256=token_digest(name), scope=scope, roles=roles)
        for name, scope, roles in [
            ("carl", "approver", ("cto",)),
            ("cora", "approver", ("ceo",)),
            ("ada", "admin", None),
        ]
    }
    app = create_app(swarm, ApiSettings(tokens=tuple(tokens.values())))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://qapten"
    ) as client:
        action = await pending_action(swarm)

        async def decide(who: str) -> httpx.Response:
            return await client.post(
                f"/api/v1/proposals/{action.id}/decision",
                json={"decision": "approve"},
                headers={"Authorization": f"Bearer {who}"},
            )

        shown = (
            await client.get(
                f"/api/v1/proposals/{action.id}", headers={"Authorization": "Bearer ada"}
            )
        ).json()
        assert datetime.fromisoformat(shown["expires_at"]) == clock.now + 30 * MINUTE
        clock.advance(30 * MINUTE)  # nobody swept: the decision request applies the deadline
        refused = await decide("carl")
        assert refused.status_code == 403, refused.text
        assert refused.json()["message"] == "carl (approver) may not decide ceo proposals"
        clock.advance(30 * MINUTE)
        refused = await decide("cora")
        assert refused.status_code == 403
        assert "it was escalated to the admins" in refused.json()["message"]
        decided = await decide("ada")
        assert decided.status_code == 200, decided.text
        body = decided.json()
        assert (body["status"], body["decided_by"], body["escalated_to"]) == (
            "approved",
            "ada",
            ADMINS,
        )
    await swarm.wait(action.run_id, timeout=10)
    [call] = await swarm.tool_calls(action.run_id)
    assert call.status == "done"


async def test_a_decision_racing_the_deadline_exactly_one_wins(
    make_swarm: SwarmFactory, tmp_path: Path
) -> None:
    clock = FakeClock()
    org = write_org(tmp_path, with_deadline({"expires_after": "30m"}))
    # The deadline passes at the 1st, 2nd, ... reading of the clock during the race, so that
    # the decision is caught at every stage: before its own sweep, between that sweep and its
    # compare-and-set, and after it; two more sweeps race it all along.
    reads = [1, 2, 3, 4, 5, 6, 8, 12, 40]
    swarm = make_swarm(cto_writes(len(reads)), org=org, clock=clock, sweep_interval=None)
    outcomes: list[str] = []
    for read in reads:
        action = await pending_action(swarm)
        clock.advance(30 * MINUTE - timedelta(microseconds=1))
        clock.advance_at_read(read, timedelta(microseconds=1))
        decided, *_ = await asyncio.gather(
            swarm.decide(action.id, "approve", by="alice"),
            swarm.expire_due(),
            swarm.expire_due(),
            return_exceptions=True,
        )
        clock.settle()  # the deadline has passed now, whenever the race read the clock
        await swarm.expire_due()
        final = await swarm.proposal(action.id)
        if isinstance(decided, BaseException):
            assert isinstance(decided, ProposalAlreadyDecided), decided
            assert final.status == "expired"
        else:
            assert final.status == "approved" and final.decided_by == "alice"
        events = await event_types(swarm, action.run_id)
        assert events.count("proposal.expired") + events.count("proposal.decided") == 1
        await swarm.wait(action.run_id, timeout=10)
        calls = await swarm.tool_calls(action.run_id)
        assert len(calls) == (1 if final.status == "approved" else 0)  # expired: never run
        outcomes.append(final.status)
    assert set(outcomes) == {"approved", "expired"}, outcomes


async def test_the_background_sweeper_applies_deadlines_while_the_swarm_is_open(
    make_swarm: SwarmFactory, tmp_path: Path
) -> None:
    clock = FakeClock()
    org = write_org(tmp_path, with_deadline({"expires_after": "1m"}))
    swarm = make_swarm(cto_writes(), org=org, clock=clock, sweep_interval=0.01)
    action = await pending_action(swarm)
    clock.advance(MINUTE)
    await swarm.wait(action.run_id, timeout=10)  # nobody calls expire_due: the sweeper does
    assert (await swarm.proposal(action.id)).status == "expired"


async def test_a_sweep_that_fails_is_logged_and_tried_again() -> None:
    sweeps = 0
    again = asyncio.Event()

    async def sweep() -> None:
        nonlocal sweeps
        sweeps += 1
        if sweeps == 1:
            raise RuntimeError("database is locked")
        again.set()

    sweeper = Sweeper(sweep, interval=0)
    sweeper.start()
    await asyncio.wait_for(again.wait(), timeout=5)
    await sweeper.stop()
    assert sweeps >= 2


async def test_a_chart_without_deadlines_leaves_proposals_open(make_swarm: SwarmFactory) -> None:
    clock = FakeClock()
    swarm = make_swarm(ScriptedChatModel({"ceo": [delegate(cto="x")]}), clock=clock)
    run = await swarm.start("Anything")
    [plan] = await swarm.pending(run.id)
    assert (plan.expires_at, plan.quorum) == (None, None)
    clock.advance(timedelta(days=365))
    await swarm.expire_due()
    assert (await swarm.proposal(plan.id)).status == "pending"


def chart_text(cto_extra: str) -> str:
    """The default chart with lines added to the CTO, after its autonomy line (line 41)."""
    lines = ORG.read_text(encoding="utf-8").splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if "autonomy: {action: approve" in line) + 1
    assert at == 41
    return "".join([*lines[:at], cto_extra, *lines[at:]])


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (
            "    deadlines:\n      action: {expires_after: 30 min}\n",
            "43:31: roles.cto.deadlines.action.expires_after: bad duration '30 min': write a "
            "whole number and a unit, like 30s, 10m, 2h or 1d",
        ),
        (
            "    deadlines:\n      question: {expires_after: 400d}\n",
            "43:33: roles.cto.deadlines.question.expires_after: duration '400d' is too long: at "
            "most 365d",
        ),
        (
            "    deadlines:\n      question: {expires_after: 0s}\n",
            "43:33: roles.cto.deadlines.question.expires_after: bad duration '0s'",
        ),
        (
            "    deadlines:\n      action: {expires_after: 30m, remind_before: 1h}\n",
            "43:51: roles.cto.deadlines.action.remind_before: remind_before (1h) must be "
            "shorter than expires_after (30m)",
        ),
        (
            "    deadlines:\n      deploy: {expires_after: 30m}\n",
            "43:7: roles.cto.deadlines.deploy: 'deploy' is neither plan, action, deliverable, "
            "question, budget, default nor a tool of role 'cto'",
        ),
        (
            "    deadlines:\n      deliverable: {expires_after: 30m}\n",
            "43:7: roles.cto.deadlines.deliverable: autonomy lets 'cto' take 'deliverable' acts "
            "alone: this would never apply",
        ),
        (
            "    deadlines:\n      action: {expires_after: 2h, on_expiry: shrug}\n",
            "43:46: roles.cto.deadlines.action.on_expiry: input should be 'reject' or 'escalate'",
        ),
        (
            "    deadlines:\n      action: {expires_after: 2h, remind: 1h}\n",
            "43:35: roles.cto.deadlines.action: unknown key 'remind'; allowed keys: "
            "expires_after, on_expiry, remind_before",
        ),
    ],
)
def test_deadline_mistakes_are_located(extra: str, problem: str) -> None:
    with pytest.raises(OrgChartError) as caught:
        OrgChart.from_text(chart_text(extra), source="org.yaml", base_dir=ORG.parent)
    [found] = caught.value.problems
    assert str(found).startswith(f"org.yaml:{problem}"), str(found)


def test_deadlines_as_written_round_trip() -> None:
    extra = (
        "    deadlines:\n"
        "      default: {expires_after: 1d}\n"
        "      action: {expires_after: 30m, remind_before: 10m, on_expiry: escalate}\n"
        "      workspace.read_file: {expires_after: 90s}\n"
    )
    chart = OrgChart.from_text(chart_text(extra), source="org.yaml", base_dir=ORG.parent)
    deadlines = chart.roles["cto"].deadlines
    assert deadlines["action"].remind_before == 10 * MINUTE
    dumped = chart.roles["cto"].model_dump(mode="json")["deadlines"]
    assert dumped["action"] == {
        "expires_after": "30m",
        "remind_before": "10m",
        "on_expiry": "escalate",
    }
    assert dumped["workspace.read_file"]["expires_after"] == "90s"
    assert dumped["default"]["expires_after"] == "1d"
