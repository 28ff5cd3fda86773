"""Aggregates for the Prometheus endpoint, computed by the database (GROUP BY, SUM), never by
loading rows: the numbers hold across restarts and agree between processes sharing a database."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Float, case, cast, func, select
from sqlalchemy.engine import Connection

from qapten.proposals import AUTO_DECIDER, DECISION_STATUS, ProposalStatus
from qapten.store import tables as t
from qapten.store.store import Store, tokens_by_role

HUMAN_DECIDED = tuple(status.value for status in DECISION_STATUS.values())
"""Statuses a human decision leads to (expired and cancelled come from the engine)."""


@dataclass(frozen=True)
class LatencyHistogram:
    """Cumulative counts: `buckets[i]` decisions took at most `bounds[i]` seconds."""

    bounds: tuple[float, ...]
    buckets: tuple[int, ...]
    count: int
    total_seconds: float


@dataclass(frozen=True)
class MetricsSnapshot:
    runs_by_status: dict[str, int]
    pending_by_role_kind: dict[tuple[str, str], int]
    decision_latency: LatencyHistogram
    tokens_by_role: dict[str, int]
    events: int


async def metrics_snapshot(store: Store, *, latency_bounds: Sequence[float]) -> MetricsSnapshot:
    """Every aggregate, read in one transaction so that they describe the same moment."""
    bounds = tuple(sorted(latency_bounds))

    def snapshot(conn: Connection) -> MetricsSnapshot:
        return MetricsSnapshot(
            runs_by_status=_runs_by_status(conn),
            pending_by_role_kind=_pending_by_role_kind(conn),
            decision_latency=_decision_latency(conn, bounds),
            tokens_by_role=tokens_by_role(conn),
            events=int(conn.execute(select(func.count()).select_from(t.events)).scalar_one()),
        )

    return await store.read(snapshot, snapshot=True)


def _runs_by_status(conn: Connection) -> dict[str, int]:
    c = t.runs.c
    rows = conn.execute(select(c.status, func.count()).group_by(c.status))
    return {status: int(count) for status, count in rows}


def _pending_by_role_kind(conn: Connection) -> dict[tuple[str, str], int]:
    c = t.proposals.c
    query = (
        select(c.role, c.kind, func.count())
        .where(c.status == ProposalStatus.PENDING.value)
        .group_by(c.role, c.kind)
    )
    return {(role, kind): int(count) for role, kind, count in conn.execute(query)}


def _decision_latency(conn: Connection, bounds: tuple[float, ...]) -> LatencyHistogram:
    c = t.proposals.c
    seconds = _seconds_between(c.created_at, c.decided_at, conn.dialect.name)
    # One row: the count, the sum, and per bound the number of decisions at or under it.
    columns: list[ColumnElement[Any]] = [func.count(), func.sum(seconds)]
    columns += [func.sum(case((seconds <= bound, 1), else_=0)) for bound in bounds]
    query = select(*columns).where(
        c.decided_at.is_not(None),
        c.status.in_(HUMAN_DECIDED),
        # Acts the policy let through waited for nobody: they have no decision latency.
        c.decided_by.is_distinct_from(AUTO_DECIDER),
    )
    count, total, *buckets = conn.execute(query).one()
    return LatencyHistogram(
        bounds=bounds,
        buckets=tuple(int(b or 0) for b in buckets),
        count=int(count),
        total_seconds=float(total or 0.0),
    )


def _seconds_between(
    start: ColumnElement[Any], end: ColumnElement[Any], dialect: str
) -> ColumnElement[float]:
    if dialect == "sqlite":
        # SQLite keeps datetimes as text; julianday() reads them as fractional days, to the
        # millisecond. Rounding to that drops the float noise of subtracting two large day
        # numbers, so that a decision of exactly 2 h falls in the 2 h bucket.
        return func.round((func.julianday(end) - func.julianday(start)) * 86400.0, 3)
    return cast(func.extract("epoch", end - start), Float)
