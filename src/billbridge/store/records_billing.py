"""Plain records for the billing projection (what crosses the store interface)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from billbridge.store.records import CustomerRecord

# Stripe object kinds the projection keeps (Stripe's `object` word).
BILLING_KINDS: tuple[str, ...] = (
    "customer",
    "subscription",
    "charge",
    "refund",
    "invoice",
    "dispute",
)


@dataclass(frozen=True)
class BillingRow:
    """One Stripe object snapshot ready to be written to its projection table.

    Written only when `order_key` sorts after the stored row's (the ordering guard).
    `values` are the kind's own columns; `sticky` names boolean columns set to true
    whatever the order (e.g. an invoice that once failed). A `customer_id` fills in a row
    stored without one (a dispute learns its customer from its charge later).
    """

    kind: str
    stripe_id: str
    customer_id: str | None
    account: str | None
    livemode: bool | None
    created: int | None
    watermark: int
    order_key: str
    values: dict[str, Any] = field(default_factory=dict)
    sticky: tuple[str, ...] = ()


@dataclass(frozen=True)
class BillingState:
    """Every projected object of one customer, as dicts of column values, by kind.

    Refunds and disputes include those linked through one of the customer's charges.
    """

    customer: dict[str, Any] | None = None
    subscriptions: tuple[dict[str, Any], ...] = ()
    charges: tuple[dict[str, Any], ...] = ()
    refunds: tuple[dict[str, Any], ...] = ()
    invoices: tuple[dict[str, Any], ...] = ()
    disputes: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class CustomerSnapshot:
    """What deciding a delivery reads about one customer: its customers-table record (None
    when the table has no row) and its billing state."""

    record: CustomerRecord | None
    state: BillingState


@dataclass(frozen=True)
class DiscoveredFacts:
    """What deciding deliveries learnt from Stripe and has not written: customers read
    from the API, projection rows from expanded reads and customer links. True whoever
    owns the deliveries, so written with the batch's outcome even when it is fenced out."""

    customers: tuple[CustomerRecord, ...] = ()
    billing: tuple[BillingRow, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.customers or self.billing)
