"""How big each benchmark is: the issue's sizes, or tiny ones for the smoke run in CI."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    missions: int
    """P1: missions timed on each side (Qapten and raw LangGraph, interleaved)."""
    pending_counts: tuple[int, ...]
    """P2: pending proposals in the database while decisions are timed."""
    resume_samples: int
    """P2: decisions timed at each pending count."""
    listed_proposals: int
    """P3: proposals in the database that the API lists."""
    list_requests: int
    """P3: requests timed for each page."""
    decisions: int
    """P4: decisions sent over HTTP."""
    decision_rounds: int
    """P4: loads of `decisions`, each on a fresh copy of the same paused runs (the median)."""
    paused_runs: int
    """P5: runs waiting for a human while the server's memory is read."""
    long_run_steps: int
    """P6: steps of the long run whose checkpoint bytes are counted."""
    concurrent_runs: int
    """P7: runs advanced at once in one process."""
    farm_workers: tuple[int, ...]
    """P8: worker processes advancing runs (a fresh database and processes for each count)."""
    farm_missions: int
    """P8: missions started over HTTP at once, in each round."""
    farm_rounds: int
    """P8: rounds of missions for each worker count (the figure is their median)."""


FULL = Sizes(
    missions=30,
    pending_counts=(10, 10_000, 100_000),
    resume_samples=500,
    listed_proposals=100_000,
    list_requests=300,
    decisions=5_000,
    decision_rounds=5,
    paused_runs=10_000,
    long_run_steps=200,
    concurrent_runs=1_000,
    farm_workers=(1, 2, 4),
    farm_missions=40,
    farm_rounds=3,
)

QUICK = Sizes(
    missions=2,
    pending_counts=(10, 300),
    resume_samples=10,
    listed_proposals=300,
    list_requests=20,
    decisions=100,
    decision_rounds=1,
    paused_runs=30,
    long_run_steps=20,
    concurrent_runs=10,
    farm_workers=(1, 2),
    farm_missions=10,
    farm_rounds=1,
)
