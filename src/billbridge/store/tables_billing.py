"""The billing projection: the Stripe objects a billing profile is computed from.

One table per Stripe object kind, keyed by the Stripe id. Every table carries the same
ordering columns: `watermark` (the Stripe `event.created` of the stored snapshot, or the
fetch time of an API read) and `order_key`, a string that sorts like the snapshot's place
in the object's history (see `billbridge.billing.ordering`); a snapshot is written only
when its `order_key` is greater than the stored one, so an older snapshot never
overwrites a newer one, whatever the arrival order.
"""

from __future__ import annotations

import sqlalchemy as sa

from billbridge.store.tables import Seconds, metadata


def _common(name: str, *columns: sa.Column[object] | sa.Index) -> sa.Table:
    """A projection table: the Stripe id, its customer, the ordering columns, then `columns`."""
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("customer_id", sa.String(255), nullable=True, index=True),
        sa.Column("account", sa.String(255), nullable=True),  # Connect account
        sa.Column("livemode", sa.Boolean(), nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=True),  # the object's own `created`
        sa.Column("watermark", sa.BigInteger(), nullable=False),
        sa.Column("order_key", sa.String(255), nullable=False),
        *columns,
        sa.Column("updated_at", Seconds(), nullable=False),
    )


# A customer's billing-only fields (email and name live in `customers`, fed by ingest).
billing_customers = _common(
    "billing_customers",
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("name", sa.Text(), nullable=True),
    sa.Column("currency", sa.String(16), nullable=True),
    sa.Column("delinquent", sa.Boolean(), nullable=True),
    sa.Column("deleted", sa.Boolean(), nullable=False),
    # JSON list of discount summaries (billbridge.billing.discounts); NULL before 0007
    sa.Column("discounts", sa.Text(), nullable=True),
)

billing_subscriptions = _common(
    "billing_subscriptions",
    sa.Column("status", sa.String(32), nullable=True),
    sa.Column("currency", sa.String(16), nullable=True),
    sa.Column("current_period_end", sa.BigInteger(), nullable=True),
    sa.Column("trial_end", sa.BigInteger(), nullable=True),
    sa.Column("cancel_at_period_end", sa.Boolean(), nullable=True),
    sa.Column("cancel_at", sa.BigInteger(), nullable=True),
    sa.Column("canceled_at", sa.BigInteger(), nullable=True),
    sa.Column("ended_at", sa.BigInteger(), nullable=True),
    # JSON list of {price_id, product_id, interval, interval_count, unit_amount, quantity}
    sa.Column("items", sa.Text(), nullable=False),
    sa.Column("mrr", sa.BigInteger(), nullable=True),  # the items' monthly amount, any status
    # JSON: discount summaries, and pause_collection (billbridge.billing.discounts)
    sa.Column("discounts", sa.Text(), nullable=True),
    sa.Column("pause_collection", sa.Text(), nullable=True),
)

billing_charges = _common(
    "billing_charges",
    sa.Column("status", sa.String(32), nullable=True),
    sa.Column("amount", sa.BigInteger(), nullable=True),
    sa.Column("amount_captured", sa.BigInteger(), nullable=True),
    sa.Column("amount_refunded", sa.BigInteger(), nullable=True),
    sa.Column("currency", sa.String(16), nullable=True),
    sa.Column("paid", sa.Boolean(), nullable=True),
)

billing_refunds = _common(
    "billing_refunds",
    sa.Column("charge_id", sa.String(255), nullable=True, index=True),
    sa.Column("status", sa.String(32), nullable=True),
    sa.Column("amount", sa.BigInteger(), nullable=True),
    sa.Column("currency", sa.String(16), nullable=True),
)

billing_invoices = _common(
    "billing_invoices",
    sa.Column("subscription_id", sa.String(255), nullable=True),
    sa.Column("status", sa.String(32), nullable=True),
    sa.Column("amount_due", sa.BigInteger(), nullable=True),
    sa.Column("amount_paid", sa.BigInteger(), nullable=True),
    sa.Column("currency", sa.String(16), nullable=True),
    sa.Column("attempt_count", sa.Integer(), nullable=True),
    # Sticky: set by any invoice.payment_failed, whatever its order (payment_recovered).
    sa.Column("payment_failed", sa.Boolean(), nullable=False),
)

billing_disputes = _common(
    "billing_disputes",
    sa.Column("charge_id", sa.String(255), nullable=True, index=True),
    sa.Column("status", sa.String(32), nullable=True),
    sa.Column("amount", sa.BigInteger(), nullable=True),
    sa.Column("currency", sa.String(16), nullable=True),
)

# Object kind (Stripe's `object` word) -> its table.
# Projection columns holding JSON text (lists and objects of the billing values).
JSON_COLUMNS = frozenset({"items", "discounts", "pause_collection"})

BILLING_TABLES: dict[str, sa.Table] = {
    "customer": billing_customers,
    "subscription": billing_subscriptions,
    "charge": billing_charges,
    "refund": billing_refunds,
    "invoice": billing_invoices,
    "dispute": billing_disputes,
}
