"""An HTTP client that starts a run on a Qapten server and approves every proposal until it is done.

Run with:  python examples/approve_over_http.py --url http://127.0.0.1:8000 --mission "…"

First start a server, for example ``qapten serve agents/org.yaml`` (it prints an admin token),
and export that token as QAPTEN_TOKEN. This script drives the run with ``qapten.client.
QaptenClient`` alone: it starts a run on the mission, then loops, printing and approving the
run's pending proposals in the order they were made, and stops when the run is done, printing
its deliverable and the tokens each role spent. A proposal someone else decided first (say, in
the web inbox) is skipped. Exit code 0 when the run is done; 1 when it failed, was cancelled, or
took longer than ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from qapten.client import AlreadyDecided, ClientError, QaptenClient


def approve_until_done(client: QaptenClient, mission: str, timeout: float) -> int:
    run = client.start(mission)
    print(f"run {run.id} started: {mission}")
    approved = 0
    deadline = time.monotonic() + timeout
    while not (run := client.run(run.id)).finished:
        if time.monotonic() > deadline:
            print(f"still {run.status} after {timeout:g} s; giving up")
            return 1
        pending = client.pending(run.id, oldest_first=True)
        for proposal in pending:
            print(f"  {proposal.role:<10} {proposal.kind:<12} {proposal.title}")
            try:
                client.decide(proposal.id, "approve")
                approved += 1
            except AlreadyDecided as exc:
                print(f"    skipped: {exc.message}")
        if not pending:
            time.sleep(0.2)  # the run is working: look again shortly
    print(f"approved {approved} proposals; run {run.status}")
    if run.status != "done":
        print(f"error: {run.error}")
        return 1
    print("Tokens spent: " + ", ".join(f"{role} {n}" for role, n in sorted(run.tokens.items())))
    print(f"Deliverable: {run.result}")
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
        with QaptenClient(args.url, token) as client:
            return approve_until_done(client, args.mission, args.timeout)
    except ClientError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
