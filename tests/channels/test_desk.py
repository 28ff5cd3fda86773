"""The chat desk's /inbox: only what the caller may decide, newest first, and a bounded read."""

from __future__ import annotations

import pytest

from qapten.api import ApiSettings
from qapten.api.deps import ApiContext
from qapten.channels import desk as desk_module
from qapten.channels.desk import ChatDesk
from qapten.testing import ScriptedChatModel, ask, delegate, deliver, use

from ..api.conftest import TOKENS
from ..conftest import SwarmFactory

USERS = {"U1": "alice", "U2": "maria", "U3": "victor"}


async def test_inbox_lists_what_each_may_decide_and_reads_a_bounded_number(
    make_swarm: SwarmFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    swarm = make_swarm(
        ScriptedChatModel(
            {
                "ceo": [delegate(cto="Write the plan", marketcom="Ask"), deliver("ok")],
                "cto": [use("workspace.write_file", path="plan.md", content="v1")],
                "marketcom": [ask("Which tone?")],
            }
        )
    )
    run = await swarm.start("Launch")
    [plan] = await swarm.pending(run.id)
    await swarm.decide(plan.id, "approve", by="alice")
    waiting = {p.role: p for p in await swarm.pending(run.id)}
    desk = ChatDesk(ApiContext.of(swarm, ApiSettings(tokens=tuple(TOKENS.values()))), "x", USERS)

    async def inbox(user: str) -> str:
        reply = await desk.command(user, "/inbox")
        assert reply is not None
        return reply.text

    alice = await inbox("U1")
    assert alice.startswith("2 waiting for you, newest first:")
    assert waiting["cto"].id in alice and waiting["marketcom"].id in alice
    maria = await inbox("U2")  # an approver of marketcom only
    assert maria.startswith("1 waiting") and waiting["cto"].id not in maria
    assert await inbox("U3") == "Nothing waits for you."  # a viewer decides nothing
    assert (await inbox("U9")).startswith("x user U9 may not act here")

    monkeypatch.setattr(desk_module, "INBOX_SCANNED", 1)  # more pending than it looks at
    assert (await inbox("U1")).startswith("1+ waiting for you")
