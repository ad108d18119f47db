"""Alerts: per-minute counts every process adds to (webhooks refused for their signature).

Revision ID: 0009_alerts
Revises: 0008_store
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_alerts"
down_revision = "0008_store"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_counts",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", "bucket", name="pk_alert_counts"),
    )


def downgrade() -> None:
    op.drop_table("alert_counts")
