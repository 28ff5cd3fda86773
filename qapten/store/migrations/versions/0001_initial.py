"""Qapten's tables as the first release made them (with create_all, before migrations).

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_when = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "qapten_runs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("org", sa.String(200), nullable=False),
        sa.Column("mission", sa.Text, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("result", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("created_at", _when, nullable=False),
        sa.Column("updated_at", _when, nullable=False),
        sa.Column("lease_owner", sa.String(120)),
        sa.Column("lease_token", sa.Integer, nullable=False),
        sa.Column("lease_expires_at", _when),
    )
    op.create_index("ix_qapten_runs_status", "qapten_runs", ["status", "created_at"])
    op.create_table(
        "qapten_proposals",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("task_id", sa.String(200), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("role", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("act", sa.String(200), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("payload_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("created_at", _when, nullable=False),
        sa.Column("decided_at", _when),
        sa.Column("decided_by", sa.String(200)),
        sa.Column("feedback", sa.Text),
        sa.Column("decided_payload", sa.JSON),
        sa.Column("approved_hash", sa.String(64)),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("expires_at", _when),
        sa.Column("remind_at", _when),
        sa.Column("escalated_to", sa.String(100)),
        sa.Column("quorum", sa.JSON(none_as_null=True)),
        sa.Column("approvals", sa.JSON, nullable=False),
        sa.UniqueConstraint("run_id", "task_id", "step", name="uq_qapten_proposals_step"),
    )
    op.create_index(
        "ix_qapten_proposals_status", "qapten_proposals", ["status", "created_at", "id"]
    )
    op.create_index("ix_qapten_proposals_run", "qapten_proposals", ["run_id", "created_at"])
    op.create_index("ix_qapten_proposals_expires", "qapten_proposals", ["status", "expires_at"])
    op.create_index("ix_qapten_proposals_remind", "qapten_proposals", ["status", "remind_at"])
    op.create_table(
        "qapten_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(40)),
        sa.Column("type", sa.String(60), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("created_at", _when, nullable=False),
    )
    op.create_index("ix_qapten_events_run", "qapten_events", ["run_id", "id"])
    op.create_table(
        "qapten_tool_calls",
        sa.Column("call_id", sa.String(40), primary_key=True),
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("task_id", sa.String(200), nullable=False),
        sa.Column("role", sa.String(100), nullable=False),
        sa.Column("tool", sa.String(200), nullable=False),
        sa.Column("args", sa.JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("result", sa.Text),
        sa.Column("started_at", _when, nullable=False),
        sa.Column("finished_at", _when),
    )
    op.create_table(
        "qapten_notes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("task_id", sa.String(200), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("created_at", _when, nullable=False),
        sa.UniqueConstraint("run_id", "task_id", "key", name="uq_qapten_notes_key"),
    )
