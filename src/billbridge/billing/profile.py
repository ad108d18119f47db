"""The billing profile of SPEC §4: Customer.io person attributes computed from the projection.

    profile = compute_profile(store, "cus_123")   # {"subscription_status": "active", ...}

An attribute is present only when the projection knows it (never invented): no charge
seen means no `total_spent`, a subscription without a trial has no `trial_end`.

Which subscription the plan attributes describe, when a customer has several: the one
with the best status rank (active, trialing, past_due, unpaid, paused, incomplete,
incomplete_expired, canceled, then anything else), then the newest (`created`, then id).
`mrr` is the sum over every subscription that is active or past_due (a trial pays
nothing yet; see `billbridge.billing.values` for the normalisation). `total_spent` and the
payment counts use succeeded charges (minus refunds) in the profile's `currency` (the
chosen subscription's, else the customer's, else the newest charge's).
"""

from __future__ import annotations

from typing import Any

from billbridge.billing.values import primary_item
from billbridge.store.base import Store
from billbridge.store.records import CustomerRecord
from billbridge.store.records_billing import BillingState

STATUS_RANK: tuple[str, ...] = (
    "active",
    "trialing",
    "past_due",
    "unpaid",
    "paused",
    "incomplete",
    "incomplete_expired",
    "canceled",
)
MRR_STATUSES = frozenset({"active", "past_due"})
_REFUND_COUNTS = frozenset({"succeeded", "pending"})

# Every attribute a profile can carry, in SPEC order.
PROFILE_ATTRIBUTES: tuple[str, ...] = (
    "email",
    "name",
    "stripe_customer_id",
    "created_at",
    "subscription_id",
    "subscription_status",
    "plan_price_id",
    "plan_product_id",
    "plan_interval",
    "plan_amount",
    "mrr",
    "currency",
    "trial_end",
    "current_period_end",
    "cancel_at_period_end",
    "canceled_at",
    "delinquent",
    "total_spent",
    "payments_count",
    "first_payment_at",
    "last_payment_at",
    "failed_payments_count",
    "last_payment_failed_at",
    "disputes_count",
)


def _status_rank(status: Any) -> int:
    return STATUS_RANK.index(status) if status in STATUS_RANK else len(STATUS_RANK)


def choose_subscription(subscriptions: tuple[dict[str, Any], ...]) -> dict[str, Any] | None:
    """The subscription the plan attributes describe (module docstring): best status rank,
    then newest."""
    if not subscriptions:
        return None
    return min(
        subscriptions,
        key=lambda s: (
            _status_rank(s.get("status")),
            -(s.get("created") or 0),
            _Reversed(str(s.get("id") or "")),
        ),
    )


class _Reversed:
    """Sorts strings in reverse (so that min() picks the greatest id on a full tie)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __lt__(self, other: _Reversed) -> bool:
        return self.text > other.text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and self.text == other.text

    def __hash__(self) -> int:
        return hash(self.text)


def _subscription_attributes(state: BillingState) -> dict[str, Any]:
    chosen = choose_subscription(state.subscriptions)
    if chosen is None:
        return {}
    attributes: dict[str, Any] = {
        "subscription_id": chosen.get("id"),
        "subscription_status": chosen.get("status"),
        "currency": chosen.get("currency"),
        "trial_end": chosen.get("trial_end"),
        "current_period_end": chosen.get("current_period_end"),
        "cancel_at_period_end": chosen.get("cancel_at_period_end"),
        "canceled_at": chosen.get("canceled_at"),
    }
    item = primary_item(list(chosen.get("items") or []))
    if item is not None:
        attributes.update(
            plan_price_id=item.get("price_id"),
            plan_product_id=item.get("product_id"),
            plan_interval=item.get("interval"),
            plan_amount=item.get("unit_amount"),
        )
    counted = [s.get("mrr") for s in state.subscriptions if s.get("status") in MRR_STATUSES]
    attributes["mrr"] = sum(m for m in counted if isinstance(m, int))
    return attributes


def _payment_attributes(state: BillingState, currency: str | None) -> dict[str, Any]:
    charges = list(state.charges)
    if not charges:
        return {}
    attributes: dict[str, Any] = {}
    if currency is None:
        newest = max(charges, key=lambda c: (c.get("created") or 0, str(c.get("id"))))
        currency = newest.get("currency")
        attributes["currency"] = currency
    charges = [c for c in charges if currency is None or c.get("currency") == currency]
    refunds_by_charge: dict[str, int] = {}
    unlinked_refunds = 0
    charge_ids = {c.get("id") for c in charges}
    for refund in state.refunds:
        if refund.get("status") not in _REFUND_COUNTS:
            continue
        amount = refund.get("amount") or 0
        charge_id = refund.get("charge_id")
        if isinstance(charge_id, str) and charge_id in charge_ids:
            refunds_by_charge[charge_id] = refunds_by_charge.get(charge_id, 0) + amount
        elif charge_id is None and refund.get("currency") == currency:
            unlinked_refunds += amount
    succeeded = [c for c in charges if c.get("status") == "succeeded"]
    failed = [c for c in charges if c.get("status") == "failed"]
    spent = 0
    for charge in succeeded:
        captured = charge.get("amount_captured")
        captured = charge.get("amount") or 0 if captured is None else captured
        # A refund seen as its own object, or as the charge's running total: the larger.
        refunded = max(charge.get("amount_refunded") or 0, refunds_by_charge.get(charge["id"], 0))
        spent += captured - refunded
    attributes.update(
        total_spent=spent - unlinked_refunds,
        payments_count=len(succeeded),
        failed_payments_count=len(failed),
    )
    paid_at = [c["created"] for c in succeeded if c.get("created") is not None]
    if paid_at:
        attributes["first_payment_at"] = min(paid_at)
        attributes["last_payment_at"] = max(paid_at)
    failed_at = [c["created"] for c in failed if c.get("created") is not None]
    if failed_at:
        attributes["last_payment_failed_at"] = max(failed_at)
    return attributes


def profile_from_state(
    customer_id: str, state: BillingState, known: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The profile from a customer's projected objects; `known` holds email, name and
    created from the customers table, preferred over the projection's."""
    known = known or {}
    customer = state.customer or {}
    profile: dict[str, Any] = {
        # The customers table first: it also holds API reads, fresher than any event.
        "email": known.get("email") or customer.get("email"),
        "name": known.get("name") or customer.get("name"),
        "stripe_customer_id": customer_id,
        "created_at": known.get("created") or customer.get("created"),
        "delinquent": customer.get("delinquent"),
    }
    profile.update(_subscription_attributes(state))
    if profile.get("currency") is None:
        profile["currency"] = customer.get("currency")
    profile.update(_payment_attributes(state, profile.get("currency")))
    if state.charges or state.disputes:
        profile["disputes_count"] = len(state.disputes)
    return {key: profile[key] for key in PROFILE_ATTRIBUTES if profile.get(key) is not None}


def known_from_record(record: CustomerRecord | None) -> dict[str, Any]:
    """The customers-table fields `profile_from_state` prefers (none without a row)."""
    if record is None:
        return {}
    return {"email": record.email, "name": record.name, "created": record.created}


def compute_profile(store: Store, customer_id: str) -> dict[str, Any]:
    """The SPEC §4 billing-profile attributes of the customer, from the projection (and
    the customers table for email, name and created); absent when unknown."""
    known = known_from_record(store.get_customer(customer_id))
    return profile_from_state(customer_id, store.billing_state(customer_id), known)
