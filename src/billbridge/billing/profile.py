"""The billing profile of SPEC §4: Customer.io person attributes computed from the projection.

    profile = compute_profile(store, "cus_123")   # {"subscription_status": "active", ...}

An attribute is present only when the projection knows it (never invented): no charge
seen means no `total_spent`, a subscription without a trial has no `trial_end`.

Which subscription the plan attributes describe, when a customer has several: the one
with the best status rank (active, trialing, past_due, unpaid, paused, incomplete,
incomplete_expired, canceled, then anything else), then the newest (`created`, then id).

Amounts never mix currencies. `currency` is the chosen subscription's (else the
customer's, else the newest charge's). `mrr` is the MRR (`billbridge.billing.values`
and `billbridge.billing.discounts`, at the time the profile is computed) of every
subscription in that currency that is active or past_due (a trial pays nothing yet, a
scheduled cancellation counts until it happens); a customer whose counted subscriptions
use another currency too also gets `mrr_by_currency` ({currency: mrr}). Likewise
`total_spent` is the succeeded charges minus refunds in `currency`, with
`total_spent_by_currency` when they span several. `payments_count`,
`failed_payments_count` and the payment times count every charge, whatever its currency.
`metered_items_count` is the number of metered items of the active, past_due and
trialing subscriptions (their usage has no MRR).

An attribute that stops being true (a trial ended, a second currency went away) is
removed from the person: `absent_attributes(profile)` names the `REMOVABLE_ATTRIBUTES`
the profile lacks, and an identify that sends the profile sends each of them with
Customer.io's removal value (`billbridge.customerio.requests.ATTRIBUTE_REMOVAL`). The
person's identity (`email`, `name`, `created_at`, `stripe_customer_id`) is never removed:
the product's own identify calls set those too, and `email` may be an identifier.
"""

from __future__ import annotations

import time
from typing import Any

from billbridge.billing.discounts import subscription_mrr
from billbridge.billing.values import metered_count, primary_item
from billbridge.store.pending import BillingReads
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
METERED_STATUSES = frozenset({"active", "past_due", "trialing"})
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
    "mrr_by_currency",
    "metered_items_count",
    "currency",
    "trial_end",
    "current_period_end",
    "cancel_at_period_end",
    "canceled_at",
    "delinquent",
    "total_spent",
    "total_spent_by_currency",
    "payments_count",
    "first_payment_at",
    "last_payment_at",
    "failed_payments_count",
    "last_payment_failed_at",
    "disputes_count",
)


# The person's identity: also set outside Billbridge, never removed by it.
IDENTITY_ATTRIBUTES = frozenset({"email", "name", "stripe_customer_id", "created_at"})
# What Billbridge alone sets, so removes when the profile no longer has it.
REMOVABLE_ATTRIBUTES: tuple[str, ...] = tuple(
    name for name in PROFILE_ATTRIBUTES if name not in IDENTITY_ATTRIBUTES
)


def absent_attributes(profile: dict[str, Any]) -> tuple[str, ...]:
    """The removable attributes `profile` lacks (SPEC order): an identify carrying the
    profile removes them from the person."""
    return tuple(name for name in REMOVABLE_ATTRIBUTES if name not in profile)


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


def _subscription_attributes(state: BillingState, now: int) -> dict[str, Any]:
    chosen = choose_subscription(state.subscriptions)
    if chosen is None:
        return {}
    currency = chosen.get("currency")
    if currency is None and state.customer is not None:
        currency = state.customer.get("currency")
    attributes: dict[str, Any] = {
        "subscription_id": chosen.get("id"),
        "subscription_status": chosen.get("status"),
        "currency": currency,
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
    customer_discounts = list((state.customer or {}).get("discounts") or [])
    # Keyed by currency; None for subscriptions that name none (old or partial payloads).
    by_currency: dict[str | None, int] = {currency: 0}
    for subscription in state.subscriptions:
        if subscription.get("status") not in MRR_STATUSES:
            continue
        mrr = subscription_mrr(subscription, customer_discounts, now=now) or 0
        code = subscription.get("currency") or currency
        by_currency[code] = by_currency.get(code, 0) + mrr
    attributes["mrr"] = by_currency[currency]
    named = {code: mrr for code, mrr in by_currency.items() if code is not None}
    if len(named) > 1:
        attributes["mrr_by_currency"] = dict(sorted(named.items()))
    attributes["metered_items_count"] = sum(
        metered_count(list(s.get("items") or []))
        for s in state.subscriptions
        if s.get("status") in METERED_STATUSES
    )
    return attributes


def _spent_by_currency(
    succeeded: list[dict[str, Any]], refunds: tuple[dict[str, Any], ...]
) -> dict[str | None, int]:
    """Succeeded charges minus refunds, per currency (None: a charge that names none)."""
    charge_ids = {c.get("id") for c in succeeded}
    refunds_by_charge: dict[str, int] = {}
    spent: dict[str | None, int] = {}
    for refund in refunds:
        if refund.get("status") not in _REFUND_COUNTS:
            continue
        amount = refund.get("amount") or 0
        charge_id = refund.get("charge_id")
        if isinstance(charge_id, str) and charge_id in charge_ids:
            refunds_by_charge[charge_id] = refunds_by_charge.get(charge_id, 0) + amount
        elif charge_id is None and isinstance(refund.get("currency"), str):
            spent[refund["currency"]] = spent.get(refund["currency"], 0) - amount
    for charge in succeeded:
        captured = charge.get("amount_captured")
        captured = charge.get("amount") or 0 if captured is None else captured
        # A refund seen as its own object, or as the charge's running total: the larger.
        refunded = max(charge.get("amount_refunded") or 0, refunds_by_charge.get(charge["id"], 0))
        code = charge.get("currency")
        spent[code] = spent.get(code, 0) + captured - refunded
    return spent


def _payment_attributes(state: BillingState, currency: str | None) -> dict[str, Any]:
    charges = list(state.charges)
    if not charges:
        return {}
    attributes: dict[str, Any] = {}
    if currency is None:
        newest = max(charges, key=lambda c: (c.get("created") or 0, str(c.get("id"))))
        currency = newest.get("currency")
        attributes["currency"] = currency
    succeeded = [c for c in charges if c.get("status") == "succeeded"]
    failed = [c for c in charges if c.get("status") == "failed"]
    spent = _spent_by_currency(succeeded, state.refunds)
    attributes.update(
        total_spent=spent.get(currency, 0),
        payments_count=len(succeeded),
        failed_payments_count=len(failed),
    )
    named = {code: amount for code, amount in spent.items() if code is not None}
    if len(named) > 1:
        attributes["total_spent_by_currency"] = dict(sorted(named.items()))
    paid_at = [c["created"] for c in succeeded if c.get("created") is not None]
    if paid_at:
        attributes["first_payment_at"] = min(paid_at)
        attributes["last_payment_at"] = max(paid_at)
    failed_at = [c["created"] for c in failed if c.get("created") is not None]
    if failed_at:
        attributes["last_payment_failed_at"] = max(failed_at)
    return attributes


def profile_from_state(
    customer_id: str,
    state: BillingState,
    known: dict[str, Any] | None = None,
    *,
    now: int | None = None,
) -> dict[str, Any]:
    """The profile from a customer's projected objects at `now` (Unix seconds, default the
    current time: discounts and pauses end); `known` holds email, name and created from the
    customers table, preferred over the projection's."""
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
    profile.update(_subscription_attributes(state, int(time.time()) if now is None else now))
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


def compute_profile(
    store: BillingReads, customer_id: str, *, now: int | None = None
) -> dict[str, Any]:
    """The SPEC §4 billing-profile attributes of the customer, from the projection (and
    the customers table for email, name and created); absent when unknown."""
    known = known_from_record(store.get_customer(customer_id))
    return profile_from_state(customer_id, store.billing_state(customer_id), known, now=now)
