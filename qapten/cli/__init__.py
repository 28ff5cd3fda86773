"""The `qapten` command line: `app`, and the order its commands are listed in.

Exit codes: 0 when all went well, 2 for a user's mistake (an invalid chart, a missing file, a file
that would be overwritten, a bad token), 1 when something else failed (a server that cannot be
reached, a proposal someone decided first). A problem is reported in one line, never as a
traceback.

`serve` runs the HTTP API and the web inbox; `inbox` and `decide` are clients of a running server
(`--url` or QAPTEN_URL, the token from QAPTEN_TOKEN: never on the command line, where other users
of the machine could read it).

One module a job: `chart` (offline work on a chart file), `orchestrate` (a run driven from this
terminal), `serve` (the HTTP server and its tokens), `remote` (clients of a running server),
`common` (what they share). The modules import only what every command needs; LangGraph, uvicorn
and FastAPI are imported inside the commands that use them, so that `qapten validate` starts fast.
"""

from __future__ import annotations

import typer

from qapten.cli import chart, orchestrate, remote, serve, worker

__all__ = ["app"]

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Qapten: a company of AI role agents that proposes while a human orchestrates.",
)

# Registered here rather than by decorators in each module, so that `qapten --help` lists them in
# the order of a first session: write and check a chart, run it, then serve it and decide remotely.
app.command()(chart.init)
app.command()(chart.validate)
app.command()(chart.graph)
app.command()(chart.schema)
app.command("run")(orchestrate.run_command)
app.command()(orchestrate.demo)
app.command()(serve.serve)
app.command()(worker.worker)
app.command()(remote.inbox)
app.command()(remote.decide)
app.command()(serve.token)
