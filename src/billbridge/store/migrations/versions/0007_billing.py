"""Billing projection: discounts (customers, subscriptions) and pause_collection, as JSON.

Rows stored before this revision have NULL there (no discount known) until the object's
next event or a backfill.

Revision ID: 0007_billing
Revises: 0006_throttle
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_billing"
down_revision = "0006_throttle"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("billing_customers") as batch:
        batch.add_column(sa.Column("discounts", sa.Text(), nullable=True))
    with op.batch_alter_table("billing_subscriptions") as batch:
        batch.add_column(sa.Column("discounts", sa.Text(), nullable=True))
        batch.add_column(sa.Column("pause_collection", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("billing_subscriptions") as batch:
        batch.drop_column("pause_collection")
        batch.drop_column("discounts")
    with op.batch_alter_table("billing_customers") as batch:
        batch.drop_column("discounts")
