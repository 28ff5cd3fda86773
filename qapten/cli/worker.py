"""`qapten worker`: advance the runs that `qapten serve --workers` servers enqueue."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from qapten.cli.common import (
    BaseUrlOption,
    ModelOption,
    OrgsArgument,
    checked_db,
    chosen_model,
    fail,
    load_teams,
    run_loop,
    run_queue,
    swarm_for,
)
from qapten.errors import QaptenError

if TYPE_CHECKING:
    from qapten.queue import RunQueue, WorkerOptions
    from qapten.swarm import Swarm


def worker(
    orgs: OrgsArgument,
    db: Annotated[
        str | None,
        typer.Option(
            envvar="QAPTEN_DB",
            help="The PostgreSQL database the servers use: postgresql://USER:PASSWORD@HOST/NAME.",
            show_default=False,
        ),
    ] = None,
    data_dir: Annotated[
        Path, typer.Option(help="Where the runs' workspaces are (share it between workers).")
    ] = Path(".qapten"),
    model: ModelOption = None,
    base_url: BaseUrlOption = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Runs advanced at once.")] = 10,
    shutdown_timeout: Annotated[
        float, typer.Option(min=0, help="On SIGTERM, seconds for the runs in hand to finish.")
    ] = 30.0,
    lease_seconds: Annotated[
        float, typer.Option(min=0.5, help="A run's lease: a dead worker's runs move on after it.")
    ] = 15.0,
    heartbeat: Annotated[
        float, typer.Option(min=0.1, help="Seconds between this worker's signs of life.")
    ] = 2.0,
    stalled_after: Annotated[
        float, typer.Option(min=0.5, help="Seconds without a heartbeat that mean a dead worker.")
    ] = 10.0,
) -> None:
    """Advance runs that 'qapten serve --workers' servers enqueue (PostgreSQL; same charts)."""
    from qapten.queue import WorkerOptions

    if db is None:
        fail("--db is required: the PostgreSQL database the servers use (or QAPTEN_DB)")
    if stalled_after < 2 * heartbeat:
        fail(
            f"--stalled-after {stalled_after:g} must be at least twice --heartbeat {heartbeat:g}: "
            "live workers would be taken for dead"
        )
    teams = load_teams(orgs)
    db = checked_db(db)
    queue = run_queue(db)
    model_given = chosen_model(model, base_url)
    swarms = {
        team: swarm_for(
            chart,
            model=model_given,
            db=db,
            data_dir=data_dir,
            team=team,
            queue=queue,
            lease_ttl=lease_seconds,
        )
        for team, chart in teams.items()
    }
    options = WorkerOptions(
        concurrency=concurrency,
        heartbeat=heartbeat,
        stalled_after=stalled_after,
        rescue_interval=min(2.0, stalled_after / 2),
        shutdown_timeout=shutdown_timeout,
    )
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    names = ", ".join(team or chart.name for team, chart in teams.items())
    typer.echo(f"Qapten worker for {names}: {concurrency} runs at once")
    run_loop(_work(queue, swarms, options))


async def _work(queue: RunQueue, swarms: dict[str, Swarm], options: WorkerOptions) -> None:
    try:
        for swarm in swarms.values():
            await swarm.open()
    except QaptenError as exc:
        fail(str(exc))
    try:
        await queue.work(swarms, options)
    finally:
        for swarm in swarms.values():
            await swarm.close()
        await queue.close()
