"""One person, one order: each delivery's person key, and the index of the people under a claim.

Revision ID: 0011_order
Revises: 0010_privacy
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_order"
down_revision = "0010_privacy"
branch_labels = None
depends_on = None

HELD = sa.text("claim_id IS NOT NULL AND status IN ('pending', 'retrying')")


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("person_key", sa.String(320), nullable=True))
    # Open deliveries get their key now; finished ones never need one.
    op.execute(
        "UPDATE deliveries SET person_key = (SELECT COALESCE(e.customer_id, lower(e.email))"
        " FROM events AS e WHERE e.id = deliveries.event_id)"
        " WHERE status IN ('pending', 'retrying')"
    )
    op.create_index(
        "ix_deliveries_held",
        "deliveries",
        ["person_key", "lease_until"],
        postgresql_where=HELD,
        sqlite_where=HELD,
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_held", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("person_key")
