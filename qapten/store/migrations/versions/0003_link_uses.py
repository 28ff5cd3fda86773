"""Signed decision links: the nonces of links already used, so that each decides once.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "qapten_link_uses",
        sa.Column("nonce", sa.String(64), primary_key=True),
        sa.Column("proposal_id", sa.String(40), nullable=False),
        sa.Column("used_by", sa.String(200), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=False),
    )
