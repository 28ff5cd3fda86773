"""Scale-out: 64-bit event and note ids on PostgreSQL, and an index for the workers' sweep of
runs whose writer died.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # On SQLite an INTEGER primary key is the 64-bit rowid already.
    if op.get_bind().dialect.name != "sqlite":
        for table in ("qapten_events", "qapten_notes"):
            op.alter_column(table, "id", type_=sa.BigInteger(), existing_nullable=False)
            # The serial's sequence keeps its own type (and so its 2**31 - 1 limit).
            op.execute(f"ALTER SEQUENCE {table}_id_seq AS bigint")
    op.create_index("ix_qapten_runs_lease", "qapten_runs", ["status", "lease_expires_at"])
