"""Fewer index entries to move at each decision and each step of a run.

The deadline indexes hold only the proposals that have a deadline, and the runs' lease index
goes: the status index serves the search for abandoned runs as well.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The condition is written out, not taken from tables.py: a migration stays as it was applied.
_DEADLINES = {
    "expires_at": "ix_qapten_proposals_expires",
    "remind_at": "ix_qapten_proposals_remind",
}


def upgrade() -> None:
    op.drop_index("ix_qapten_runs_lease", table_name="qapten_runs")
    for column, name in _DEADLINES.items():
        where = sa.text(f"{column} IS NOT NULL")
        op.drop_index(name, table_name="qapten_proposals")
        op.create_index(
            name, "qapten_proposals", ["status", column], sqlite_where=where, postgresql_where=where
        )
