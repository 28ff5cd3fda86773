"""`qapten demo`: the default org on a sample mission, offline, on the embedded model.

Two ways to watch it:

* interactive (default): the HTTP API and the web inbox are served on 127.0.0.1 and the terminal
  prompts for each proposal; decide from either, whichever is handier.
* ``--auto``: nobody decides; `FULL_AUTOPILOT` approves every act and answers every question with
  a fixed text, and the mission runs to its end. For a first look and for CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from langchain_core.language_models import BaseChatModel
from rich.console import Console
from rich.markup import escape

from qapten.autopilot import FULL_AUTOPILOT, decide_automatically
from qapten.errors import ConfigurationError
from qapten.local_model import EmbeddedModel, embedded_model, uses_embedded
from qapten.orgchart import OrgChart
from qapten.progress import ModelProgress, progress_bar, start_with_progress
from qapten.report import show_outcome
from qapten.storage import default_db
from qapten.store import FINISHED_RUN, Run
from qapten.swarm import Swarm

DEMO_MISSION = (
    "Plan the launch of Stride, a running-coach app: the product plan, the launch message "
    "and the support FAQ, on one page."
)


def default_org() -> Path:
    """The default org chart: shipped inside the wheel, or the checkout's ``agents/``."""
    shipped = Path(str(resources.files("qapten").joinpath("default_org", "org.yaml")))
    if shipped.is_file():
        return shipped
    checkout = Path(__file__).resolve().parent.parent / "agents" / "org.yaml"
    if checkout.is_file():
        return checkout
    msg = "the default org chart is missing from this installation; pass one: qapten demo ORG"
    raise ConfigurationError(msg)


@dataclass(frozen=True)
class DemoOptions:
    chart: OrgChart
    data_dir: Path
    mission: str = DEMO_MISSION
    auto: bool = False
    host: str = "127.0.0.1"
    port: int = 8000
    model: BaseChatModel | None = None
    """Overrides the chart's model (the chart's default is the embedded one)."""


async def run_demo(options: DemoOptions, console: Console) -> Run:
    """Run the demo mission to its end; return the finished run."""
    embedded = _embedded_for(options)
    if embedded is not None:
        await start_with_progress(embedded, console)
    try:
        if options.auto:
            return await _run_auto(options, console)
        return await _run_interactive(options, console)
    finally:
        if embedded is not None:
            await embedded.stop()


def _embedded_for(options: DemoOptions) -> EmbeddedModel | None:
    return embedded_model() if uses_embedded(options.chart, options.model) else None


def _swarm(options: DemoOptions, callbacks: list[ModelProgress] | None = None) -> Swarm:
    options.data_dir.mkdir(parents=True, exist_ok=True)
    return Swarm(
        options.chart,
        model=options.model,
        db=default_db(options.data_dir),
        workspaces=options.data_dir / "workspaces",
        callbacks=callbacks or [],
    )


async def _run_auto(options: DemoOptions, console: Console) -> Run:
    started = time.monotonic()
    with progress_bar(console) as progress:
        swarm = _swarm(options, [ModelProgress(progress)])
        async with swarm:
            run = await swarm.start(options.mission)
            console.print(f"run {run.id}: {escape(options.mission)}")
            while run.status not in FINISHED_RUN:
                await decide_automatically(swarm, run.id, FULL_AUTOPILOT)
                await asyncio.sleep(0.05)  # a run held by another process's lease moves later
                run = await swarm.run(run.id)
            await show_outcome(swarm, run, console)
    console.print(f"[dim]finished in {time.monotonic() - started:.0f} s[/]")
    return run


async def _run_interactive(options: DemoOptions, console: Console) -> Run:
    import uvicorn

    from qapten.api import create_app
    from qapten.api.listen import listen
    from qapten.api.settings import ApiSettings
    from qapten.terminal import orchestrate

    sock = listen(options.host, options.port)  # a port in use is one line, before anything runs
    token = secrets.token_urlsafe(24)  # this session's only key; gone when the demo ends
    settings = ApiSettings(admin_token=token, data_dir=options.data_dir)
    swarm = _swarm(options)
    app = create_app(swarm, settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host=options.host, port=options.port, log_level="warning")
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                msg = f"the web inbox did not start on {options.host}:{options.port}"
                raise ConfigurationError(msg)
            await asyncio.sleep(0.05)
        url = f"http://{options.host}:{options.port}/#token={token}"
        # soft_wrap: a URL cut in two by the terminal's width could not be clicked or copied.
        console.print(f"web inbox: {url}", soft_wrap=True, highlight=False)
        console.print(f"API token: {token}", soft_wrap=True, highlight=False)
        run = await swarm.start(options.mission)
        console.print(f"run {run.id}: {escape(options.mission)}")
        if sys.stdin.isatty():
            run = await orchestrate(swarm, run.id, console=console, pilot=None)
        else:
            console.print("decide in the web inbox; waiting for the run to end")
            while run.status not in FINISHED_RUN:
                await asyncio.sleep(0.5)
                run = await swarm.run(run.id)
        await show_outcome(swarm, run, console)
        return run
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await serving
