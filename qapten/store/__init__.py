"""Durable records: runs, proposals, decisions, events and the tool journal."""

from qapten.store.store import FINISHED_RUN, Event, Run, Store, ToolCall, sqlalchemy_url

__all__ = ["FINISHED_RUN", "Event", "Run", "Store", "ToolCall", "sqlalchemy_url"]
