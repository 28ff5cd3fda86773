"""The loop of the long-lived commands (serve, worker)."""

from __future__ import annotations

import asyncio

from qapten.cli.common import run_loop


def test_serve_and_worker_run_on_uvloop() -> None:
    async def loop_module() -> str:
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop()).__module__

    assert run_loop(loop_module()).startswith("uvloop")  # a dependency wherever it is built
