"""What the commands share: the one-line failure, chart loading, `--model`, and option aliases.

An option declared here means the same in every command that takes it; an option whose default
differs per command (`--data-dir`) is declared by each command instead.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from qapten.errors import OrgChartError, QaptenError
from qapten.orgchart import OrgChart

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from qapten.queue import RunQueue
    from qapten.swarm import Swarm

T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run`, on uvloop when it is installed (as uvicorn chooses for itself): the loop
    of the long-lived processes, `serve` and `worker`, where the loop's own cost per callback
    and per socket event adds up."""
    try:
        import uvloop
    except ImportError:  # not built for Windows
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


OrgArgument = Annotated[Path, typer.Argument(help="The org chart, e.g. agents/org.yaml.")]
OrgsArgument = Annotated[
    list[Path],
    typer.Argument(
        help="The org chart, e.g. agents/org.yaml; several make a deployment of teams, one per "
        "chart, each with its own runs and tokens."
    ),
]
ModelOption = Annotated[
    str | None,
    typer.Option(
        envvar="QAPTEN_MODEL",
        help="local, openai:NAME or scripted:FILE.json; overrides the chart's model.",
    ),
]
BaseUrlOption = Annotated[
    str | None,
    typer.Option(envvar="QAPTEN_BASE_URL", help="OpenAI-compatible server, for openai:NAME."),
]
DbOption = Annotated[
    str | None,
    typer.Option(
        envvar="QAPTEN_DB",
        help="Database URL: sqlite:///FILE or postgresql://USER:PASSWORD@HOST:PORT/NAME.",
        show_default="sqlite:///DATA_DIR/qapten.db",
    ),
]
HostOption = Annotated[str, typer.Option(help="Address to listen on.")]
PortOption = Annotated[int, typer.Option(min=1, max=65535)]


def fail(message: str) -> NoReturn:
    """Report a user's mistake in one line and exit 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def load_chart(org: Path) -> OrgChart:
    """The chart at `org`, or exit 2 with each problem as FILE:LINE:COL: message."""
    try:
        return OrgChart.from_file(org)
    except OSError as exc:
        fail(f"cannot read {org}: {exc.strerror or exc}")
    except OrgChartError as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        raise typer.Exit(2) from None


def chosen_model(spec: str | None, base_url: str | None) -> BaseChatModel | None:
    """The model of `--model` (None: the org chart's own), or exit 2 naming the problem."""
    from pydantic import ValidationError

    from qapten.models import ModelRef, chat_model

    if spec is None:
        if base_url is not None:
            fail("--base-url needs --model openai:NAME")
        return None
    try:
        ref = ModelRef.parse(spec)
        if base_url is not None:
            ref = ModelRef.parse({**ref.model_dump(exclude_none=True), "base_url": base_url})
        return chat_model(ref)
    except ValidationError as exc:
        fail(f"--model {spec}: {exc.errors()[0]['msg']}")
    except (ValueError, QaptenError) as exc:
        fail(f"--model {spec}: {exc}")


def swarm_for(
    chart: OrgChart,
    *,
    model: BaseChatModel | None,
    db: str,
    data_dir: Path,
    team: str = "",
    queue: RunQueue | None = None,
    **options: Any,
) -> Swarm:
    """The chart's swarm (of `team`, on a deployment of several), or exit 2; without
    `--model`, the error says it can be given."""
    from qapten.swarm import Swarm  # LangGraph loads only for commands that need it
    from qapten.teams import team_db

    workspaces = data_dir / "workspaces" / team if team else data_dir / "workspaces"
    try:
        return Swarm(
            chart,
            model=model,
            db=team_db(db, team),
            workspaces=workspaces,
            team=team,
            queue=queue,
            **options,
        )
    except QaptenError as exc:
        fail(str(exc) if model else f"{exc} (or choose one with --model)")


@contextmanager
def data_dir_errors(data_dir: Path) -> Iterator[None]:
    """Turn a failure to create or use `data_dir` into one line and exit 2."""
    try:
        yield
    except OSError as exc:
        fail(f"cannot use the data directory {data_dir}: {exc.strerror or exc}")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def load_teams(orgs: list[Path]) -> dict[str, OrgChart]:
    """The deployment's teams from the chart files (qapten.teams), or exit 2."""
    from qapten.teams import teams_of

    try:
        return teams_of([(org, load_chart(org)) for org in orgs])
    except QaptenError as exc:
        fail(str(exc))


def checked_db(db: str) -> str:
    """`db` if Qapten can use it, or exit 2 naming the problem."""
    from qapten.storage import check_db

    try:
        check_db(db)
    except QaptenError as exc:
        fail(f"--db {exc}")
    return db


def run_queue(db: str) -> RunQueue:
    """The queue of runs for `qapten worker` processes on `db`, or exit 2 naming the problem."""
    from qapten.queue import RunQueue

    try:
        return RunQueue(db)
    except ImportError as exc:
        fail(
            f"workers need the postgres extra: pip install 'qapten[postgres]' "
            f"({exc.name} is missing)"
        )
    except QaptenError as exc:
        fail(str(exc))
