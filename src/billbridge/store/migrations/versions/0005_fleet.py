"""Fleet: the Customer.io rate limits all processes share.

Revision ID: 0005_fleet
Revises: 0004_merge
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_fleet"
down_revision = "0004_merge"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("next_at", sa.Double(), nullable=False),
        sa.Column("taken_at", sa.Double(), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_rate_limits"),
    )


def downgrade() -> None:
    op.drop_table("rate_limits")
