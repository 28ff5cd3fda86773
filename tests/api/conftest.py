from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from qapten import Swarm
from qapten.api import ApiSettings, create_app
from qapten.api.settings import TokenSpec, token_digest
from qapten.testing import ScriptedChatModel, delegate, deliver, use

from ..conftest import ORG

TOKENS = {
    "admin-token": TokenSpec(name="alice", sha256=token_digest("admin-token"), scope="admin"),
    "viewer-token": TokenSpec(name="victor", sha256=token_digest("viewer-token"), scope="viewer"),
    "mc-token": TokenSpec(
        name="maria", sha256=token_digest("mc-token"), scope="approver", roles=("marketcom",)
    ),
}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def parallel_script() -> ScriptedChatModel:
    return ScriptedChatModel(
        {
            "ceo": [
                delegate(cto="Write the plan", marketcom="Draft the post"),
                deliver("all done"),
            ],
            "cto": [
                use("workspace.write_file", path="plan.md", content="v1"),
                deliver("plan ready"),
            ],
            "marketcom": [deliver("post drafted")],
        }
    )


@pytest.fixture
async def swarm(db: str) -> AsyncIterator[Swarm]:
    swarm = Swarm.from_yaml(ORG, model=parallel_script(), db=db)
    await swarm.open()
    yield swarm
    await swarm.close()


@pytest.fixture
async def client(swarm: Swarm) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(swarm, ApiSettings(tokens=tuple(TOKENS.values())))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://qapten") as client:
        yield client
