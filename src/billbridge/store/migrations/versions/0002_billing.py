"""Billing projection: customers' billing fields, subscriptions, charges, refunds, invoices,
disputes (each keyed by Stripe id, with a watermark and an order key).

Revision ID: 0002_billing
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_billing"
down_revision = "0001"
branch_labels = None
depends_on = None


def _create(name: str, *columns: sa.Column[object], indexed: tuple[str, ...] = ()) -> None:
    """A projection table with the common columns (as in store/tables_billing.py)."""
    op.create_table(
        name,
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=True),
        sa.Column("account", sa.String(255), nullable=True),
        sa.Column("livemode", sa.Boolean(), nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=True),
        sa.Column("watermark", sa.BigInteger(), nullable=False),
        sa.Column("order_key", sa.String(255), nullable=False),
        *columns,
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=f"pk_{name}"),
    )
    for column in ("customer_id", *indexed):
        op.create_index(f"ix_{name}_{column}", name, [column])


def upgrade() -> None:
    _create(
        "billing_customers",
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("currency", sa.String(16), nullable=True),
        sa.Column("delinquent", sa.Boolean(), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
    )
    _create(
        "billing_subscriptions",
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("currency", sa.String(16), nullable=True),
        sa.Column("current_period_end", sa.BigInteger(), nullable=True),
        sa.Column("trial_end", sa.BigInteger(), nullable=True),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=True),
        sa.Column("cancel_at", sa.BigInteger(), nullable=True),
        sa.Column("canceled_at", sa.BigInteger(), nullable=True),
        sa.Column("ended_at", sa.BigInteger(), nullable=True),
        sa.Column("items", sa.Text(), nullable=False),
        sa.Column("mrr", sa.BigInteger(), nullable=True),
    )
    _create(
        "billing_charges",
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("amount_captured", sa.BigInteger(), nullable=True),
        sa.Column("amount_refunded", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(16), nullable=True),
        sa.Column("paid", sa.Boolean(), nullable=True),
    )
    _create(
        "billing_refunds",
        sa.Column("charge_id", sa.String(255), nullable=True),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(16), nullable=True),
        indexed=("charge_id",),
    )
    _create(
        "billing_invoices",
        sa.Column("subscription_id", sa.String(255), nullable=True),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("amount_due", sa.BigInteger(), nullable=True),
        sa.Column("amount_paid", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(16), nullable=True),
        sa.Column("attempt_count", sa.Integer(), nullable=True),
        sa.Column("payment_failed", sa.Boolean(), nullable=False),
    )
    _create(
        "billing_disputes",
        sa.Column("charge_id", sa.String(255), nullable=True),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(16), nullable=True),
        indexed=("charge_id",),
    )


def downgrade() -> None:
    for name in (
        "billing_disputes",
        "billing_invoices",
        "billing_refunds",
        "billing_charges",
        "billing_subscriptions",
        "billing_customers",
    ):
        op.drop_table(name)
