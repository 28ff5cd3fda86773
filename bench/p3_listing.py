"""P3: the pending inbox over HTTP, first page and a page 90% deep, with many proposals stored."""

from __future__ import annotations

import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from bench.http_server import serving
from bench.report import Row
from bench.seed import seed_pending
from bench.sizes import Sizes
from bench.stats import ms, percentile
from qapten.api.schemas import encode_cursor

TARGET_P99 = 0.030
DEPTH = 0.9
"""How deep the deep page starts: 90% of the way from the newest proposal to the oldest."""
WARM_UP = 10
LISTING = "/proposals?status=pending"


async def measure(sizes: Sizes) -> list[Row]:
    count = sizes.listed_proposals
    with tempfile.TemporaryDirectory(prefix="qapten-bench-") as tmp:
        folder = Path(tmp)
        db = f"sqlite:///{folder / 'qapten.db'}"
        ids = await seed_pending(db, count)
        with serving(db, log=folder / "server.log") as server:
            async with httpx.AsyncClient(
                base_url=server.api, headers=server.headers, timeout=30
            ) as client:
                deep = await _deep_cursor(client, ids)
                pages = {"first": LISTING, "deep": f"{LISTING}&cursor={deep}"}
                # The deep page must be the one meant: right after the cursor's proposal.
                expected = ids[_deep_index(ids) - 1]
                got = (await client.get(pages["deep"])).raise_for_status().json()["items"][0]
                if got["id"] != expected:
                    raise RuntimeError(f"deep page starts at {got['id']}, not {expected}")
                for _ in range(WARM_UP):  # connections, caches and the code paths warm up
                    for url in pages.values():
                        (await client.get(url)).raise_for_status()
                times: dict[str, list[float]] = {name: [] for name in pages}
                # Interleaved, so that a noisy neighbour slows both pages alike.
                for _ in range(sizes.list_requests):
                    for name, url in pages.items():
                        started = time.perf_counter()
                        (await client.get(url)).raise_for_status()
                        times[name].append(time.perf_counter() - started)
    numbers: dict[str, float | int] = {"proposals": count, "requests_per_page": sizes.list_requests}
    for name, values in times.items():
        numbers[f"{name}_p50_s"] = percentile(values, 50)
        numbers[f"{name}_p99_s"] = percentile(values, 99)
    worst = max(numbers["first_p99_s"], numbers["deep_p99_s"])
    figure = (
        f"first page p50 {ms(numbers['first_p50_s'])}, p99 {ms(numbers['first_p99_s'])}; "
        f"90% deep p50 {ms(numbers['deep_p50_s'])}, p99 {ms(numbers['deep_p99_s'])} "
        f"({count:,} pending, 50 a page, {sizes.list_requests} requests each)"
    )
    return [
        Row(
            "P3",
            "GET /proposals?status=pending over HTTP (uvicorn)",
            figure,
            f"p99 <= {TARGET_P99 * 1000:.0f} ms",
            worst <= TARGET_P99,
            numbers,
        )
    ]


def _deep_index(ids: list[str]) -> int:
    """The index (oldest first) of the proposal whose cursor starts the deep page."""
    newest_first = round(DEPTH * len(ids))
    return max(1, len(ids) - 1 - newest_first)


async def _deep_cursor(client: httpx.AsyncClient, ids: list[str]) -> str:
    """A cursor as the API makes them (schemas.keyset_page): the created_at and id of the last
    item of the page before, read from the API rather than walked to, page by page."""
    proposal = (await client.get(f"/proposals/{ids[_deep_index(ids)]}")).raise_for_status().json()
    return encode_cursor(datetime.fromisoformat(proposal["created_at"]), proposal["id"])
