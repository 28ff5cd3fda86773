"""The app a real uvicorn process serves for the web inbox tests, configured by environment.

QAPTEN_TEST_DB       database URL
QAPTEN_ADMIN_TOKEN   the admin token
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from pydantic import SecretStr

from qapten import Swarm
from qapten.api import ApiSettings, create_app
from qapten.testing import ScriptedChatModel, ask, delegate, deliver, use

ORG = Path(__file__).resolve().parents[2] / "agents" / "org.yaml"

# Markup an agent might write; the inbox must show it as text and never run it.
XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss=2">'
CTO_BRIEF = f"Write the launch plan {XSS}"
RESULT = "The coaching app is launched."


def script() -> ScriptedChatModel:
    """CEO plans (markup in a brief) → CTO writes a file (approve; markup in it) and MarketCom
    asks a question, then delivers (approve) → CEO delivers (approve)."""
    return ScriptedChatModel(
        {
            "ceo": [
                delegate(cto=CTO_BRIEF, marketcom="Draft the launch post"),
                deliver(RESULT),
            ],
            "cto": [
                use("workspace.write_file", path="plan.md", content=f"# Plan\n{XSS}"),
                deliver("plan.md is written"),
            ],
            "marketcom": [ask("Which launch date?"), deliver("The launch post is drafted")],
        }
    )


def make_app() -> FastAPI:
    swarm = Swarm.from_yaml(ORG, model=script(), db=os.environ["QAPTEN_TEST_DB"])
    settings = ApiSettings(admin_token=SecretStr(os.environ["QAPTEN_ADMIN_TOKEN"]))
    return create_app(swarm, settings)
