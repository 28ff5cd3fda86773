from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from qapten import Swarm
from qapten.store import Store
from qapten.testing import ScriptedChatModel
from tests.postgres import Cluster, running_cluster
from tests.postgres import available as postgres_available

ROOT = Path(__file__).resolve().parent.parent
ORG = ROOT / "agents" / "org.yaml"


BACKENDS = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Every test on a database runs on both, unless marked sqlite_only (it looks inside the
    # SQLite file itself).
    if "backend" in metafunc.fixturenames:
        only = metafunc.definition.get_closest_marker("sqlite_only")
        metafunc.parametrize("backend", BACKENDS[:1] if only else BACKENDS)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """A throwaway PostgreSQL cluster for the whole session (made and deleted by tests/postgres)."""
    reason = postgres_available()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs the PostgreSQL tests: {reason}")
        pytest.skip(reason)
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture(autouse=True)
def _workspaces_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Swarms on PostgreSQL keep run workspaces in $QAPTEN_WORKSPACES: never in the checkout.
    monkeypatch.setenv("QAPTEN_WORKSPACES", str(tmp_path / "workspaces"))


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def db(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A new, empty database of the test's backend."""
    if backend == "postgresql":
        cluster: Cluster = request.getfixturevalue("postgres")
        return cluster.new_database()
    return f"sqlite:///{tmp_path / 'qapten.db'}"


SwarmFactory = Callable[..., Swarm]


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    """A store on a fresh SQLite file: for tests of what SQLite itself does (its driver, its
    query plans), which run on SQLite only."""
    store = await Store.open(f"sqlite:///{tmp_path / 'qapten.db'}")
    try:
        yield store
    finally:
        await store.close()


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
