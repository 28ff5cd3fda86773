"""The app a real uvicorn process serves in end-to-end tests, configured by environment.

QAPTEN_TEST_ORG      org chart (default agents/org.yaml)
QAPTEN_TEST_DB       database URL
QAPTEN_TEST_SCRIPT   scripted model, a JSON file
QAPTEN_TEST_EFFECTS  file that `append_effect` appends to
QAPTEN_ADMIN_TOKEN   the admin token (read by ApiSettings)
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from qapten import Swarm
from qapten.api import ApiSettings, create_app
from qapten.testing import ScriptedChatModel

ROOT = Path(__file__).resolve().parents[2]


def append_effect(text: str) -> str:
    """Append a line to the effects file: an external, non-idempotent side effect."""
    with Path(os.environ["QAPTEN_TEST_EFFECTS"]).open("a", encoding="utf-8") as handle:
        handle.write(text + "\n")
    return f"applied {text}"


def make_app() -> FastAPI:
    org = os.environ.get("QAPTEN_TEST_ORG", str(ROOT / "agents" / "org.yaml"))
    model = ScriptedChatModel.from_file(os.environ["QAPTEN_TEST_SCRIPT"])
    swarm = Swarm.from_yaml(org, model=model, db=os.environ["QAPTEN_TEST_DB"])
    return create_app(swarm, ApiSettings.load())
