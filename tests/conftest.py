from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from qapten import Swarm
from qapten.testing import ScriptedChatModel

ROOT = Path(__file__).resolve().parent.parent
ORG = ROOT / "agents" / "org.yaml"


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'qapten.db'}"


SwarmFactory = Callable[..., Swarm]


@pytest.fixture
async def make_swarm(db: str) -> AsyncIterator[SwarmFactory]:
    """Build swarms on the default org chart and one temporary database; closes them after."""
    made: list[Swarm] = []

    def factory(script: Any, **options: Any) -> Swarm:
        model = script if isinstance(script, ScriptedChatModel) else ScriptedChatModel(script)
        options.setdefault("db", db)
        swarm = Swarm.from_yaml(options.pop("org", ORG), model=model, **options)
        made.append(swarm)
        return swarm

    yield factory
    for swarm in made:
        await swarm.close()


def write_org(folder: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """Copy the default org chart and its prompts to `folder`, with `change` applied to the YAML."""
    data = yaml.safe_load(ORG.read_text(encoding="utf-8"))
    change(data)
    folder.mkdir(parents=True, exist_ok=True)
    for prompt in ORG.parent.glob("*.md"):
        shutil.copy(prompt, folder / prompt.name)
    target = folder / "org.yaml"
    target.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return target
