"""Prometheus metrics, read from the database at each scrape.

A fresh registry per scrape, filled from aggregate queries rather than from in-process counters:
the values survive restarts and agree between several servers on one database.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from qapten.api.deps import Context
from qapten.api.errors import QaptenRoute
from qapten.api.routes.runs import RUN_STATUSES
from qapten.store.metrics import MetricsSnapshot, metrics_snapshot

router = APIRouter(tags=["metrics"], route_class=QaptenRoute)

_MINUTE, _HOUR = 60.0, 3600.0
# A human answers in seconds when at the screen, in hours when not: 1 s up to a day.
LATENCY_BOUNDS = (
    1.0,
    5.0,
    15.0,
    30.0,
    _MINUTE,
    5 * _MINUTE,
    15 * _MINUTE,
    30 * _MINUTE,
    _HOUR,
    2 * _HOUR,
    4 * _HOUR,
    8 * _HOUR,
    24 * _HOUR,
)


class _SnapshotCollector(Collector):
    def __init__(self, snapshot: MetricsSnapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        runs = GaugeMetricFamily("qapten_runs", "Runs by status.", labels=["status"])
        # Every known status, zeros included, so that dashboards see a series from the start.
        for status, count in sorted(
            {**dict.fromkeys(RUN_STATUSES, 0), **snap.runs_by_status}.items()
        ):
            runs.add_metric([status], count)
        yield runs

        pending = GaugeMetricFamily(
            "qapten_pending_proposals",
            "Proposals waiting for a human, by role and kind.",
            labels=["role", "kind"],
        )
        for (role, kind), count in sorted(snap.pending_by_role_kind.items()):
            pending.add_metric([role, kind], count)
        yield pending

        latency = snap.decision_latency
        yield HistogramMetricFamily(
            "qapten_decision_latency_seconds",
            "Time from a proposal's creation to a human's decision (acts the policy let "
            "through alone are not counted).",
            buckets=[
                *((str(b), n) for b, n in zip(latency.bounds, latency.buckets, strict=True)),
                ("+Inf", latency.count),
            ],
            sum_value=latency.total_seconds,
        )

        tokens = CounterMetricFamily(
            "qapten_tokens", "Model tokens spent, by role.", labels=["role"]
        )
        for role, count in sorted(snap.tokens_by_role.items()):
            tokens.add_metric([role], count)
        yield tokens

        yield CounterMetricFamily(
            "qapten_events", "Events written to the audit log.", value=snap.events
        )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
)
async def metrics(context: Context) -> Response:
    """Prometheus metrics: runs by status, pending proposals, decision latency, tokens, events.

    Needs no token, like the health check: it holds counts, never content.
    """
    snapshot = await metrics_snapshot(context.swarm.store, latency_bounds=LATENCY_BOUNDS)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
