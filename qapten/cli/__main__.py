"""`python -m qapten.cli`: the same app as the `qapten` entry point."""

from qapten.cli import app

app()
