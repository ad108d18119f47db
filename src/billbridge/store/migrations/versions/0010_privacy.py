"""Privacy: events pruned by retention or erasure, and the record of erasures.

Revision ID: 0010_privacy
Revises: 0009_alerts
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_privacy"
down_revision = "0009_alerts"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("pruned_at", sa.Double(), nullable=True))
        batch.add_column(sa.Column("pruned_reason", sa.String(16), nullable=True))
        batch.create_index("ix_events_retention", ["pruned_at", "received_at"])
    op.create_table(
        "erasures",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("matched_by", sa.String(16), nullable=False),
        sa.Column("matched_hash", sa.String(64), nullable=False),
        sa.Column("customers", sa.Integer(), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("requested_by", sa.String(255), nullable=False),
        sa.Column("cio_action", sa.String(16), nullable=False),
        sa.Column("cio_event_ids", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_erasures"),
    )


def downgrade() -> None:
    op.drop_table("erasures")
    with op.batch_alter_table("events") as batch:
        batch.drop_index("ix_events_retention")
        batch.drop_column("pruned_reason")
        batch.drop_column("pruned_at")
