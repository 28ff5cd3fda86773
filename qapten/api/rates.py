"""Request rates: the ``N/unit`` format of settings, and token buckets that enforce one.

A bucket per caller holds up to N requests and refills at N per unit: a caller who has been quiet
may send N at once, and N per unit after that. The buckets live in this process: replicas behind
one load balancer would each allow the full rate, until they share a store (Redis, say).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

UNITS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*([a-z]+?)s?\s*$")


@dataclass(frozen=True)
class Rate:
    """`requests` per `per` seconds, in bursts of up to `requests`."""

    requests: int
    per: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``"600/minute"`` (units: second, minute, hour)."""
        match = _RATE.match(text.lower())
        if match is None or match[2] not in UNITS or int(match[1]) < 1:
            units = ", ".join(UNITS)
            msg = f"rate {text!r}: write N/unit with N >= 1 and a unit among {units} (or off)"
            raise ValueError(msg)
        return cls(int(match[1]), UNITS[match[2]])

    def __str__(self) -> str:
        unit = next((name for name, seconds in UNITS.items() if seconds == self.per), None)
        return f"{self.requests}/{unit}" if unit else f"{self.requests}/{self.per:g}s"


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets by key, on an injectable monotonic `clock` (seconds)."""

    def __init__(
        self, rate: Rate, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000
    ) -> None:
        self.rate = rate
        self.clock = clock
        self.max_keys = max_keys
        self._refill = rate.requests / rate.per  # tokens per second
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, key: str) -> int:
        """Take one request from `key`'s bucket: 0 if allowed, else the whole seconds to wait."""
        now = self.clock()
        bucket = self._buckets.pop(key, None)  # re-inserted last: the dict is oldest-used first
        if bucket is None:
            self._make_room(now)
            bucket = _Bucket(float(self.rate.requests), now)
        bucket.tokens = min(
            float(self.rate.requests), bucket.tokens + (now - bucket.updated) * self._refill
        )
        bucket.updated = now
        self._buckets[key] = bucket
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0
        return max(1, math.ceil((1 - bucket.tokens) / self._refill))

    def _make_room(self, now: float) -> None:
        # Many callers (addresses, mostly) must not grow memory without end. A full bucket is the
        # same as no bucket, so those go first; then the least recently used.
        if len(self._buckets) < self.max_keys:
            return
        full = self.rate.per  # an idle bucket is full again after one period
        for key in [k for k, b in self._buckets.items() if now - b.updated >= full]:
            del self._buckets[key]
        while len(self._buckets) >= self.max_keys:
            del self._buckets[next(iter(self._buckets))]

    def __len__(self) -> int:
        return len(self._buckets)
