"""Commands that orchestrate a run from this terminal: run, demo.

The logic lives in `qapten.terminal` and `qapten.demo`; these turn options into their inputs and
their outcome into an exit code.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from qapten.cli.common import (
    BaseUrlOption,
    DbOption,
    HostOption,
    ModelOption,
    OrgArgument,
    PortOption,
    chosen_model,
    data_dir_errors,
    fail,
    is_loopback,
    load_chart,
    swarm_for,
)
from qapten.errors import QaptenError
from qapten.storage import default_db

_RUN_DATA_DIR = Path(".qapten")


def run_command(
    org: OrgArgument,
    mission: Annotated[str | None, typer.Option(help="What the company should achieve.")] = None,
    resume: Annotated[
        str | None, typer.Option(metavar="RUN_ID", help="Continue a paused run instead.")
    ] = None,
    auto_approve: Annotated[
        bool,
        typer.Option(
            "--auto-approve", help="Approve approve-level acts; ask only for human-level ones."
        ),
    ] = False,
    # Declared apart from serve's, whose default comes from its settings (QAPTEN_DATA_DIR too).
    data_dir: Annotated[
        Path, typer.Option(envvar="QAPTEN_DATA_DIR", help="Database and workspaces, as serve's.")
    ] = _RUN_DATA_DIR,
    db: DbOption = None,
    model: ModelOption = None,
    base_url: BaseUrlOption = None,
) -> None:
    """Give the company a mission and orchestrate it here, deciding each proposal as it comes.

    Ctrl-C pauses (exit 130): the run waits in the database for --resume RUN_ID. Exit 0 when the
    run is done, 1 when it failed or was cancelled.
    """
    import shlex

    from rich.console import Console

    from qapten.autopilot import Autopilot
    from qapten.terminal import run_in_terminal

    if (mission is None) == (resume is None):
        fail("give --mission TEXT for a new run or --resume RUN_ID for a paused one (not both)")
    if mission is not None and not mission.strip():
        fail("--mission is empty: say what the company should achieve")
    chart = load_chart(org)
    swarm = swarm_for(
        chart, model=chosen_model(model, base_url), db=db or default_db(data_dir), data_dir=data_dir
    )
    with data_dir_errors(data_dir):  # only once every mistake above is ruled out
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    # The options that reach this run again, for the "resume with" line printed on Ctrl-C.
    where = None if data_dir == _RUN_DATA_DIR else str(data_dir)
    given = {"--data-dir": where, "--db": db, "--model": model, "--base-url": base_url}
    again = [f"{flag}={value}" for flag, value in given.items() if value]
    again += ["--auto-approve"] if auto_approve else []

    def resume_command(run_id: str) -> str:
        return shlex.join(["qapten", "run", str(org), "--resume", run_id, *again])

    try:
        code = asyncio.run(
            run_in_terminal(
                swarm,
                mission=mission,
                resume=resume,
                console=Console(),
                pilot=Autopilot() if auto_approve else None,
                resume_command=resume_command,
            )
        )
    except QaptenError as exc:
        fail(str(exc))
    except KeyboardInterrupt:  # before the run's prompts took Ctrl-C over, or after
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    raise typer.Exit(code)


def demo(
    org: Annotated[
        Path | None,
        typer.Argument(help="An org chart.", show_default="the bundled default org"),
    ] = None,
    auto: Annotated[
        bool,
        typer.Option(
            "--auto", help="Decide everything automatically and run the mission to its end."
        ),
    ] = False,
    mission: Annotated[
        str | None, typer.Option(help="The mission.", show_default="a sample product launch")
    ] = None,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    # Not run's .qapten: a demo's runs stay apart from real ones.
    data_dir: Annotated[Path, typer.Option(help="Database and workspaces.")] = Path(".qapten-demo"),
    model: ModelOption = None,
    base_url: BaseUrlOption = None,
) -> None:
    """Run the default org on a sample mission with the embedded model, offline.

    Serves the web inbox on 127.0.0.1 and prompts in the terminal; decide from either.
    """
    from rich.console import Console

    from qapten.demo import DEMO_MISSION, DemoOptions, default_org, run_demo

    if not is_loopback(host):
        fail(f"the demo serves without configured tokens, so only on loopback, not {host}")
    try:
        chart = load_chart(org or default_org())
    except QaptenError as exc:
        fail(str(exc))
    options = DemoOptions(
        chart=chart,
        data_dir=data_dir,
        mission=mission or DEMO_MISSION,
        auto=auto,
        host=host,
        port=port,
        model=chosen_model(model, base_url),
    )
    try:
        run = asyncio.run(run_demo(options, Console()))
    except QaptenError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        typer.echo(f"stopped; the run is kept in {data_dir}", err=True)
        raise typer.Exit(130) from None
    raise typer.Exit(0 if run.status == "done" else 1)
