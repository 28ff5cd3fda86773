"""Qapten's benchmarks: the framework's own cost, measured side by side in one run.

Run ``python -m bench`` from the checkout (``--quick`` for tiny sizes, ``--only P1,P6`` for some
rows). Every figure is a ratio or a distribution taken in the same process run, with the scripted
zero-latency model, so that only the framework is measured; the results go to a table on the
terminal and to ``docs/benchmarks.md`` with a description of the machine. See docs/benchmarks.md.
"""
