"""An HTTP client that starts a run on a Qapten server and approves every proposal until it is done.

Run with:  python examples/approve_over_http.py --url http://127.0.0.1:8000 --mission "…"

First start a server, for example ``qapten serve agents/org.yaml`` (it prints an admin token),
and export that token as QAPTEN_TOKEN. This script starts a run on the mission (``POST
/api/v1/runs``), then loops: lists the run's pending proposals with ``qapten.client.QaptenClient``,
prints and approves each one, and stops when the run is done, printing its deliverable. A
proposal someone else decided first (say, in the web inbox) is skipped. Exit code 0 when the run
is done; 1 when it failed, was cancelled, or took longer than ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import httpx

from qapten.client import AlreadyDecided, ClientError, QaptenClient

API = "/api/v1"
FINISHED = {"done", "failed", "cancelled"}


def approve_until_done(url: str, token: str, mission: str, timeout: float) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    # QaptenClient lists and decides proposals; plain HTTP starts the run and reads its status.
    with httpx.Client(base_url=url + API, headers=headers, timeout=10) as http:

        def call(method: str, path: str, **options: Any) -> dict[str, Any]:
            response = http.request(method, path, **options)
            if response.is_error:
                raise ClientError(f"{method} {path}: HTTP {response.status_code} {response.text}")
            data: dict[str, Any] = response.json()
            return data

        run = call("POST", "/runs", json={"mission": mission})
        print(f"run {run['id']} started: {mission}")
        approved = 0
        deadline = time.monotonic() + timeout
        with QaptenClient(url, token) as client:
            while (run := call("GET", f"/runs/{run['id']}"))["status"] not in FINISHED:
                if time.monotonic() > deadline:
                    print(f"still {run['status']} after {timeout:g} s; giving up")
                    return 1
                mine = [p for p in client.pending() if p.run_id == run["id"]]
                for proposal in reversed(mine):  # the API lists newest first
                    print(f"  {proposal.role:<10} {proposal.kind:<12} {proposal.title}")
                    try:
                        client.decide(proposal.id, "approve")
                        approved += 1
                    except AlreadyDecided as exc:
                        print(f"    skipped: {exc.message}")
                if not mine:
                    time.sleep(0.2)  # the run is working: look again shortly
        print(f"approved {approved} proposals; run {run['status']}")
        if run["status"] != "done":
            print(f"error: {run['error']}")
            return 1
        print(f"Deliverable: {run['result']}")
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the Qapten server")
    parser.add_argument("--mission", default="Launch the public-speaking coaching app")
    parser.add_argument("--timeout", type=float, default=60, help="seconds before giving up")
    args = parser.parse_args()
    token = os.environ.get("QAPTEN_TOKEN")
    if not token:
        print("set QAPTEN_TOKEN to a token of the server (qapten serve prints one)")
        return 2
    try:
        return approve_until_done(args.url.rstrip("/"), token, args.mission, args.timeout)
    except ClientError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except httpx.HTTPError as exc:
        print(f"error: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
