"""Qapten's own tables, beside LangGraph's checkpoints: runs, proposals, events, tool journal,
notes, the signed decision links already used, and the notices delivered to chat channels."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()


def with_a(column: str) -> dict[str, Any]:
    """The keywords of a partial index over the rows where `column` is set, on both dialects."""
    where = text(f"{column} IS NOT NULL")
    return {"sqlite_where": where, "postgresql_where": where}


SCHEMA_REVISION = "0005"
"""The Alembic revision these tables are at (qapten/store/migrations; a test checks it is head)."""

# 64-bit ids on a database server; on SQLite an INTEGER primary key is the 64-bit rowid already,
# and only the exact type INTEGER makes it one (and so auto-incrementing).
BigId = BigInteger().with_variant(Integer(), "sqlite")

runs = Table(
    "qapten_runs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org", String(200), nullable=False),
    Column("mission", Text, nullable=False),
    Column("status", String(20), nullable=False),
    Column("result", Text),
    Column("error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # One writer advances a run at a time: a lease with a fencing token (the token grows at
    # every new claim, so a writer that lost its lease can tell).
    Column("lease_owner", String(120)),
    Column("lease_token", Integer, nullable=False, default=0),
    Column("lease_expires_at", DateTime(timezone=True)),
    # Also how workers find running runs whose writer died (qapten/queue.py): a run changes
    # status at every step, and each index led by it is two more pages written each time.
    Index("ix_qapten_runs_status", "status", "created_at"),
)

proposals = Table(
    "qapten_proposals",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("run_id", String(40), nullable=False),
    Column("task_id", String(200), nullable=False),
    Column("step", Integer, nullable=False),
    Column("role", String(100), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("act", String(200), nullable=False),
    Column("title", Text, nullable=False),
    Column("payload", JSON, nullable=False),
    Column("payload_hash", String(64), nullable=False),
    Column("status", String(24), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("decided_at", DateTime(timezone=True)),
    Column("decided_by", String(200)),
    Column("feedback", Text),
    Column("decided_payload", JSON),
    Column("approved_hash", String(64)),
    # Tokens the model spent to produce this proposal, its retries included.
    Column("tokens", Integer, nullable=False, default=0),
    # Deadlines (qapten/deadlines.py): the sweeper looks for pending rows past these two.
    Column("expires_at", DateTime(timezone=True)),
    Column("remind_at", DateTime(timezone=True)),
    Column("escalated_to", String(100)),
    # M-of-N acts. The approvals ([{by, at}]) live on the row itself: recording one, and at the
    # quorum the decision, is one update of one locked row, so an approver counts once.
    Column("quorum", JSON(none_as_null=True)),
    Column("approvals", JSON, nullable=False, default=list),
    # The model is asked once per (task, step): a replay after a crash finds this row instead.
    UniqueConstraint("run_id", "task_id", "step", name="uq_qapten_proposals_step"),
    Index("ix_qapten_proposals_status", "status", "created_at", "id"),
    Index("ix_qapten_proposals_run", "run_id", "created_at"),
    # Only the proposals with a deadline: a decision on one without (most of them) moves no
    # entry of these two. The sweeper's `time <= now` implies the condition, so both SQLite
    # and PostgreSQL use them for it.
    Index("ix_qapten_proposals_expires", "status", "expires_at", **with_a("expires_at")),
    Index("ix_qapten_proposals_remind", "status", "remind_at", **with_a("remind_at")),
)

events = Table(
    "qapten_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_id", String(40)),
    Column("type", String(60), nullable=False),
    Column("data", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_qapten_events_run", "run_id", "id"),
)

tool_calls = Table(
    "qapten_tool_calls",
    metadata,
    Column("call_id", String(40), primary_key=True),
    Column("run_id", String(40), nullable=False),
    Column("task_id", String(200), nullable=False),
    Column("role", String(100), nullable=False),
    Column("tool", String(200), nullable=False),
    Column("args", JSON, nullable=False),
    Column("status", String(20), nullable=False),
    Column("result", Text),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
)

# What each task has learnt (qapten/store/notes.py): kept here, not in the checkpointed board.
notes = Table(
    "qapten_notes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),  # the order of learning
    Column("run_id", String(40), nullable=False),
    Column("task_id", String(200), nullable=False),
    Column("key", String(200), nullable=False),
    Column("text", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # A step replayed after a crash writes the same key again: it must not add a second note.
    UniqueConstraint("run_id", "task_id", "key", name="uq_qapten_notes_key"),
)

# Signed decision links used (qapten/store/links.py): a link decides once, so its nonce is kept.
link_uses = Table(
    "qapten_link_uses",
    metadata,
    Column("nonce", String(64), primary_key=True),
    Column("proposal_id", String(40), nullable=False),
    Column("used_by", String(200), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=False),
)

# Notices for chat channels and webhooks (qapten/store/deliveries.py): one row per event and
# destination, which is also the delivery log (tries, last error, where the message went).
deliveries = Table(
    "qapten_deliveries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("destination", String(200), nullable=False),
    Column("event_id", BigInteger, nullable=False),
    Column("event_type", String(60), nullable=False),
    Column("run_id", String(40)),
    Column("proposal_id", String(40)),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("last_error", Text),
    Column("message", JSON(none_as_null=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True)),
    # Replicas that read the same events plan the same rows: the second insert does nothing.
    UniqueConstraint("destination", "event_id", name="uq_qapten_deliveries_event"),
    Index("ix_qapten_deliveries_due", "status", "next_attempt_at"),
    Index("ix_qapten_deliveries_proposal", "proposal_id", "destination"),
)

# How far a reader of the events table has read (the notifier's cursor), so that a restart
# goes on where it stopped instead of notifying everything again.
cursors = Table(
    "qapten_cursors",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("event_id", BigInteger, nullable=False),
)
