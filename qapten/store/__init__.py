"""Durable records: runs, proposals, decisions, events and the tool journal."""

from qapten.store.store import Event, Run, Store, ToolCall, sqlalchemy_url

__all__ = ["Event", "Run", "Store", "ToolCall", "sqlalchemy_url"]
