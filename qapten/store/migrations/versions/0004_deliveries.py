"""Chat channels and webhooks: the delivery log, and the notifier's cursor over the events.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# As in tables.py: 64-bit on a server; on SQLite only INTEGER makes the rowid alias.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "qapten_deliveries",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("destination", sa.String(200), nullable=False),
        sa.Column("event_id", sa.BigInteger, nullable=False),
        sa.Column("event_type", sa.String(60), nullable=False),
        sa.Column("run_id", sa.String(40)),
        sa.Column("proposal_id", sa.String(40)),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("message", sa.JSON(none_as_null=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("destination", "event_id", name="uq_qapten_deliveries_event"),
    )
    op.create_index("ix_qapten_deliveries_due", "qapten_deliveries", ["status", "next_attempt_at"])
    op.create_index(
        "ix_qapten_deliveries_proposal", "qapten_deliveries", ["proposal_id", "destination"]
    )
    op.create_table(
        "qapten_cursors",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("event_id", sa.BigInteger, nullable=False),
    )
