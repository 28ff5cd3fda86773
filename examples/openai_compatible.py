"""A mission of the default org, or of the support desk, on a real OpenAI-compatible server.

Run with: python examples/openai_compatible.py --base-url http://127.0.0.1:11434/v1 --model llama3.2

That is Ollama (``ollama pull llama3.2`` first); any server that speaks OpenAI's chat completions
with tool calls will do: llama.cpp's llama-server, vLLM, LM Studio… Leave out --base-url to use
OpenAI itself, with OPENAI_API_KEY set (``--model gpt-4o-mini``). ``--org support-desk`` runs the
two-role desk of examples/support_desk/org.yaml on a customer ticket instead of the company.

The model is a plain ``ChatOpenAI`` passed to ``Swarm.from_yaml``: any LangChain chat model would
do. This script stands in for the human: it approves every proposal and answers every question,
printing each, then prints the deliverable, the tokens each role spent and how long it all took.
To decide yourself, run ``qapten run agents/org.yaml --model openai:llama3.2 --base-url URL``.
An org chart can also name the server itself, retries and timeout included:
``model: {provider: openai, name: llama3.2, base_url: URL, max_retries: 3, timeout: 120}``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from qapten import Answer, Approve, Decision, Proposal, RunFailed, Swarm

HERE = Path(__file__).resolve().parent
ORGS = {
    "default": (HERE.parent / "agents" / "org.yaml", "Launch the public-speaking coaching app"),
    "support-desk": (
        HERE / "support_desk" / "org.yaml",
        "T-1042 from Dana: I was charged twice for my March invoice. Please fix it.",
    ),
}
ANSWER = "Use your best judgement and keep it short; I will review the result."


def decision_for(proposal: Proposal) -> Decision:
    """The human orchestrator, in a hurry: approve everything, answer every question briefly."""
    return Answer(text=ANSWER) if proposal.kind == "question" else Approve()


async def run_mission(org: Path, mission: str, model: ChatOpenAI) -> int:
    with tempfile.TemporaryDirectory() as folder:
        async with Swarm.from_yaml(org, model=model, db=f"sqlite:///{folder}/qapten.db") as swarm:
            chart, where = swarm.chart, model.openai_api_base or "OpenAI"
            print(f"{chart.name} ({len(chart.roles)} roles), {model.model_name} at {where}")
            print(f"Mission: {mission}")
            began = time.perf_counter()
            run = await swarm.start(mission)
            while pending := await swarm.pending(run.id):
                for proposal in pending:
                    decision = decision_for(proposal)
                    said = type(decision).__name__.lower()
                    print(f"  {proposal.role:<10} {proposal.kind:<12} {proposal.title} -> {said}")
                    await swarm.decide(proposal.id, decision)
            try:
                done = await swarm.wait(run.id)
            except RunFailed as exc:
                print(f"Run {exc.status} after {time.perf_counter() - began:.1f} s: {exc.reason}")
                return 1
            took = time.perf_counter() - began
            tokens = await swarm.tokens(run.id)
            print(f"Deliverable: {done.result}")
            spent = ", ".join(f"{role} {n}" for role, n in sorted(tokens.items()))
            print(f"Tokens spent: {spent} ({sum(tokens.values())} in all)")
            print(f"Took {took:.1f} s")
            return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt-4o-mini", help="the model's name on the server")
    parser.add_argument("--base-url", help="the server's URL, up to /v1 (default: OpenAI's)")
    parser.add_argument("--org", choices=ORGS, default="default", help="which org chart")
    parser.add_argument("--mission", help="what to achieve (default: one that suits the org)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds for one answer")
    args = parser.parse_args()
    key = os.environ.get("OPENAI_API_KEY")
    if key is None and args.base_url is None:
        print("set OPENAI_API_KEY to use OpenAI, or pass --base-url of another server")
        return 2
    model = ChatOpenAI(
        model=args.model,
        base_url=args.base_url,
        api_key=SecretStr(key or "not-needed"),  # local servers take any key
        # Rate limits (429, as long as Retry-After asks), server errors, timeouts and refused
        # connections are sent again, with backoff: 4 tries in all before the task fails.
        max_retries=3,
        # ChatOpenAI waits forever by default; a small model on a CPU may take a minute.
        timeout=args.timeout,
    )
    org, mission = ORGS[args.org]
    return asyncio.run(run_mission(org, args.mission or mission, model))


if __name__ == "__main__":
    sys.exit(main())
