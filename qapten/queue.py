"""Runs advanced by `qapten worker` processes, through procrastinate's job queue on PostgreSQL.

A server that records a decision (or starts a run) enqueues one job: "advance run R of team T".
A worker takes it and advances the run until it waits for a human or ends. procrastinate keeps
the queue in the same PostgreSQL database, so there is no broker to run; its job ``lock`` (one
per run) lets a single job of a run be in hand at a time, and its ``queueing_lock`` keeps at
most one more waiting: decisions that land while a run is advanced are all seen by that next
job. Inside the job, the run's lease and fencing token still guard the writes (qapten.driver).

A worker that dies loses its claim: procrastinate sees its heartbeat stop, and the rescue loop
of the surviving workers ends that job and enqueues the run again; the tool journal keeps the
replayed step from repeating an effect. A worker told to stop (SIGTERM) finishes the runs in
hand, or after ``shutdown_timeout`` stops them and hands them back to the queue at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qapten.errors import ConfigurationError
from qapten.storage import engine_url, is_postgres, libpq_url, shown_url

if TYPE_CHECKING:
    from procrastinate import App

    from qapten.swarm import Swarm

logger = logging.getLogger(__name__)

TASK = "qapten.advance_run"
QUEUE = "qapten"
SCHEMA_LOCK = 0x5141_5054_5351  # the advisory lock held while procrastinate's tables are made


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker works; the defaults suit production, tests shorten the times."""

    concurrency: int = 10
    """Runs advanced at once by one worker process."""
    heartbeat: float = 2.0
    """Seconds between the worker's heartbeats in procrastinate's table."""
    stalled_after: float = 10.0
    """Seconds without a heartbeat after which a worker is taken for dead."""
    rescue_interval: float = 2.0
    """Seconds between two looks for runs whose writer died."""
    shutdown_timeout: float = 30.0
    """On SIGTERM, seconds given to the runs in hand before they go back to the queue."""


class RunQueue:
    """The queue of runs to advance, shared by the servers (that enqueue) and the workers."""

    def __init__(self, db: str) -> None:
        from procrastinate import App, PsycopgConnector

        if not is_postgres(db):
            msg = (
                f"workers need PostgreSQL: {shown_url(db)} cannot hold a shared queue "
                "(use --db postgresql://...)"
            )
            raise ConfigurationError(msg)
        self.conninfo = libpq_url(engine_url(db))
        self._shown = shown_url(db)
        self.app: App = App(connector=PsycopgConnector(conninfo=self.conninfo))
        self._swarms: Mapping[str, Swarm] = {}
        self._advance = self.app.task(name=TASK, queue=QUEUE)(self._advance_run)
        self._open = False

    async def open(self) -> None:
        """Connect, and make procrastinate's tables if the database has none yet."""
        import psycopg
        from procrastinate.exceptions import ConnectorException

        if self._open:
            return
        try:
            await self.app.open_async()
            try:
                await self._ensure_schema()
            except BaseException:
                await self.app.close_async()
                raise
        except (psycopg.Error, ConnectorException, OSError) as exc:
            reason = " ".join(str(exc).split())
            msg = f"cannot open the job queue in {self._shown}: {reason}"
            raise ConfigurationError(msg) from exc
        self._open = True

    async def close(self) -> None:
        if self._open:
            self._open = False
            await self.app.close_async()

    async def enqueue(self, team: str, run_id: str) -> None:
        """Have a worker advance `run_id` of `team` (once more, if one is advancing it now)."""
        from procrastinate.exceptions import AlreadyEnqueued

        key = f"{team}/{run_id}"
        try:
            await self._advance.configure(lock=key, queueing_lock=key).defer_async(
                team=team, run_id=run_id
            )
        except AlreadyEnqueued:
            pass  # a job of this run is waiting already: it will see this change too

    async def work(
        self, swarms: Mapping[str, Swarm], options: WorkerOptions, *, signals: bool = True
    ) -> None:
        """Advance the runs of `swarms` (by team) as jobs come, until SIGTERM or SIGINT (with
        `signals`), or until cancelled."""
        self._swarms = swarms
        rescue = asyncio.create_task(self._rescue_loop(swarms, options))
        try:
            await self.app.run_worker_async(
                queues=[QUEUE],
                concurrency=options.concurrency,
                update_heartbeat_interval=options.heartbeat,
                stalled_worker_timeout=options.stalled_after,
                shutdown_graceful_timeout=options.shutdown_timeout,
                delete_jobs="successful",
                install_signal_handlers=signals,
            )
        finally:
            rescue.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rescue

    async def _advance_run(self, team: str, run_id: str) -> None:
        swarm = self._swarms.get(team)
        if swarm is None:
            logger.error("a job for team %r, which this worker does not serve: skipped", team)
            return
        try:
            await swarm.advance(run_id)
        except asyncio.CancelledError:
            # Shutting down: the run was stopped between two writes and its lease released;
            # another worker takes it up now rather than when the lease would have lapsed.
            await asyncio.shield(self.enqueue(team, run_id))
            raise

    async def _rescue_loop(self, swarms: Mapping[str, Swarm], options: WorkerOptions) -> None:
        while True:
            await asyncio.sleep(options.rescue_interval)
            try:
                await self.rescue(swarms, options)
            except Exception:
                logger.exception("looking for runs whose writer died failed; trying again")

    async def rescue(self, swarms: Mapping[str, Swarm], options: WorkerOptions) -> list[str]:
        """End the jobs of dead workers, and enqueue the runs of `swarms` that nobody advances
        although they have work in hand (their writer died, or a server died between recording
        a decision and enqueuing it). Returns those runs, as ``team/run``."""
        from procrastinate.jobs import Status

        manager = self.app.job_manager
        for job in await manager.get_stalled_jobs(
            queue=QUEUE, task_name=TASK, seconds_since_heartbeat=options.stalled_after
        ):
            logger.warning("job %s of a dead worker: ending it, its run goes back", job.id)
            # Ended, not retried: the run is enqueued again below once its lease lapses.
            await manager.finish_job(job, status=Status.FAILED, delete_job=False)
        rescued = []
        for team, swarm in swarms.items():
            for run_id in await swarm.store.abandoned_runs(idle_for=options.stalled_after):
                await self.enqueue(team, run_id)
                rescued.append(f"{team}/{run_id}")
        return rescued

    async def _ensure_schema(self) -> None:
        import psycopg
        from procrastinate.schema import SchemaManager

        async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
            await conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
            try:
                cursor = await conn.execute("SELECT to_regclass('procrastinate_jobs')")
                found = await cursor.fetchone()
                if found is None or found[0] is None:
                    await conn.execute(SchemaManager.get_schema())
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK,))
