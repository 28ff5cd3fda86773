"""Durable records: runs, proposals, decisions, events and the tool journal."""

from qapten.store.base import FINISHED_RUN, Event, Run, ToolCall
from qapten.store.store import Store

__all__ = ["FINISHED_RUN", "Event", "Run", "Store", "ToolCall"]
