"""A generated, coherent Stripe account ("world") for backfill and reconcile tests.

    world = generate_world(200, seed=7)
    load_world(fake_stripe, world)               # objects and their events into FakeStripe
    world.expected("cus_...")                    # key profile values derived from the world

Deterministic for a seed. Each customer gets 0-2 subscriptions (month, year or week
prices, quantity 1-3, statuses active / trialing / past_due / canceled / unpaid /
incomplete, some with cancel_at_period_end), an invoice per billed period (paid, or
failed then maybe paid), a charge per invoice attempt (succeeded or failed), a few
one-off charges, partial and full refunds and some disputes. Shapes follow Stripe's
fixtures (`fixtures3.json`, API 2025-03-31.basil and later: billing periods on the items,
the invoice's subscription under `parent`). Events are the ones Stripe would have sent,
each rendered with the object's state at that moment (final state for the last one).
"""

from __future__ import annotations

import copy
import random
import string
import time
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.stripe_api import FakeStripe

DAY = 86_400
API_VERSION = "2026-10-28.endive"
# price id -> (product, interval, unit_amount)
PRICES: dict[str, tuple[str, str, int]] = {
    "price_basic_month": ("prod_basic", "month", 900),
    "price_pro_month": ("prod_pro", "month", 2900),
    "price_pro_year": ("prod_pro", "year", 29000),
    "price_team_month": ("prod_team", "month", 9900),
    "price_news_week": ("prod_news", "week", 500),
}
PERIOD = {"month": 30 * DAY, "year": 365 * DAY, "week": 7 * DAY}
STATUSES = (
    ("active", 50),
    ("trialing", 10),
    ("past_due", 10),
    ("canceled", 15),
    ("unpaid", 5),
    ("incomplete", 5),
    ("active_cancel_scheduled", 5),
)


@dataclass
class World:
    """Every object of the account, by kind, and the events Stripe sent about them."""

    now: int
    customers: list[dict[str, Any]] = field(default_factory=list)
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    invoices: list[dict[str, Any]] = field(default_factory=list)
    charges: list[dict[str, Any]] = field(default_factory=list)
    refunds: list[dict[str, Any]] = field(default_factory=list)
    disputes: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def objects(self) -> list[dict[str, Any]]:
        return [
            *self.customers,
            *self.subscriptions,
            *self.invoices,
            *self.charges,
            *self.refunds,
            *self.disputes,
        ]

    def expected(self, customer_id: str) -> dict[str, Any]:
        """Key billing-profile values computed straight from the world (not via Billbridge):
        `total_spent`, `payments_count`, `failed_payments_count`, `disputes_count` (when the
        customer has any charge), and for
        a customer with exactly one subscription its `subscription_status`, and `mrr` when
        that subscription is active on a monthly price."""
        charges = [c for c in self.charges if c["customer"] == customer_id]
        succeeded = [c for c in charges if c["status"] == "succeeded"]
        charge_ids = {c["id"] for c in succeeded}
        refunded = sum(r["amount"] for r in self.refunds if r["charge"] in charge_ids)
        values: dict[str, Any] = {}
        if charges:  # no charge at all: the payment attributes are unknown, not zero
            values["total_spent"] = sum(c["amount"] for c in succeeded) - refunded
            values["payments_count"] = len(succeeded)
            values["failed_payments_count"] = len(charges) - len(succeeded)
            values["disputes_count"] = sum(1 for d in self.disputes if d["charge"] in charge_ids)
        subscriptions = [s for s in self.subscriptions if s["customer"] == customer_id]
        if len(subscriptions) == 1:
            subscription = subscriptions[0]
            values["subscription_status"] = subscription["status"]
            item = subscription["items"]["data"][0]
            if subscription["status"] == "active" and item["price"]["recurring"]["interval"] == (
                "month"
            ):
                values["mrr"] = item["price"]["unit_amount"] * item["quantity"]
        return values


class _Maker:
    """Builds the objects; every id and time comes from one seeded RNG."""

    def __init__(self, seed: int, now: int, *, with_events: bool = True) -> None:
        self.rng = random.Random(seed)
        self.with_events = with_events
        self.now = now
        self.world = World(now=now)
        self._event_seq = 0

    def id(self, prefix: str) -> str:
        alphabet = string.ascii_letters + string.digits
        return prefix + "".join(self.rng.choice(alphabet) for _ in range(14))

    def event(
        self, event_type: str, obj: dict[str, Any], created: int, previous: Any = None
    ) -> None:
        self._event_seq += 1
        if not self.with_events:
            return
        data: dict[str, Any] = {"object": copy.deepcopy(obj)}
        if previous is not None:
            data["previous_attributes"] = previous
        self.world.events.append(
            {
                "id": f"evt_w{self._event_seq:07d}{self.id('')[:10]}",
                "object": "event",
                "api_version": API_VERSION,
                "created": min(created, self.now - 1),
                "data": data,
                "livemode": False,
                "pending_webhooks": self.rng.choice((0, 1)),
                "request": {"id": None, "idempotency_key": None},
                "type": event_type,
            }
        )

    # Objects --------------------------------------------------------------------------

    def customer(self, index: int, created: int) -> dict[str, Any]:
        customer = {
            "id": self.id("cus_"),
            "object": "customer",
            "address": None,
            "balance": 0,
            "created": created,
            "currency": "usd",
            "default_source": None,
            "delinquent": False,
            "description": None,
            "discount": None,
            "email": f"customer{index}@example.com",
            "invoice_prefix": self.id("")[:8].upper(),
            "livemode": False,
            "metadata": {"account_id": f"acct-{index}"},
            "name": f"Customer {index}",
            "phone": None,
            "preferred_locales": [],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }
        self.world.customers.append(customer)
        self.event("customer.created", customer, created)
        return customer

    def charge(
        self, customer: dict[str, Any], amount: int, created: int, *, succeeded: bool
    ) -> dict[str, Any]:
        charge = {
            "id": self.id("ch_"),
            "object": "charge",
            "amount": amount,
            "amount_captured": amount if succeeded else 0,
            "amount_refunded": 0,
            "billing_details": {"email": None, "name": customer["name"], "phone": None},
            "captured": succeeded,
            "created": created,
            "currency": "usd",
            "customer": customer["id"],
            "description": None,
            "disputed": False,
            "failure_code": None if succeeded else "card_declined",
            "failure_message": None if succeeded else "Your card was declined.",
            "livemode": False,
            "metadata": {},
            "outcome": {"type": "authorized" if succeeded else "issuer_declined"},
            "paid": succeeded,
            "payment_intent": self.id("pi_"),
            "receipt_email": customer["email"] if self.rng.random() < 0.5 else None,
            "refunded": False,
            "status": "succeeded" if succeeded else "failed",
        }
        self.world.charges.append(charge)
        self.event("charge.succeeded" if succeeded else "charge.failed", charge, created)
        if succeeded:
            self.maybe_refund_or_dispute(charge)
        return charge

    def maybe_refund_or_dispute(self, charge: dict[str, Any]) -> None:
        roll = self.rng.random()
        at = charge["created"] + self.rng.randint(600, 3 * DAY)
        if at >= self.now:
            return
        if roll < 0.12:
            full = self.rng.random() < 0.5
            amount = charge["amount"] if full else max(1, charge["amount"] // 3)
            refund = {
                "id": self.id("re_"),
                "object": "refund",
                "amount": amount,
                "charge": charge["id"],
                "created": at,
                "currency": charge["currency"],
                "metadata": {},
                "payment_intent": charge["payment_intent"],
                "reason": "requested_by_customer",
                "status": "succeeded",
            }
            self.world.refunds.append(refund)
            previous = {"amount_refunded": 0, "refunded": False}
            charge["amount_refunded"] = amount
            charge["refunded"] = full
            self.event("charge.refunded", charge, at, previous)
        elif roll < 0.15:
            dispute = {
                "id": self.id("dp_"),
                "object": "dispute",
                "amount": charge["amount"],
                "charge": charge["id"],
                "created": at,
                "currency": charge["currency"],
                "evidence_details": {"due_by": at + 14 * DAY, "has_evidence": False},
                "is_charge_refundable": True,
                "livemode": False,
                "metadata": {},
                "payment_intent": charge["payment_intent"],
                "reason": self.rng.choice(("fraudulent", "general", "product_not_received")),
                "status": "needs_response",
            }
            self.world.disputes.append(dispute)
            charge["disputed"] = True
            self.event("charge.dispute.created", dispute, at)

    def invoice(
        self,
        customer: dict[str, Any],
        subscription: dict[str, Any],
        amount: int,
        period: tuple[int, int],
        *,
        paid: bool,
    ) -> None:
        created = period[0]
        attempts = 1 if paid else self.rng.randint(1, 3)
        charge = None
        for attempt in range(attempts):
            at = min(created + attempt * DAY, self.now - 90)
            charge = self.charge(customer, amount, at, succeeded=paid and attempt == 0)
        invoice = {
            "id": self.id("in_"),
            "object": "invoice",
            "amount_due": amount,
            "amount_paid": amount if paid else 0,
            "amount_remaining": 0 if paid else amount,
            "attempt_count": attempts,
            "attempted": True,
            "billing_reason": "subscription_cycle",
            "collection_method": "charge_automatically",
            "created": created,
            "currency": "usd",
            "customer": customer["id"],
            "customer_email": customer["email"],
            "customer_name": customer["name"],
            "hosted_invoice_url": None,
            "livemode": False,
            "metadata": {},
            "number": f"{customer['invoice_prefix']}-{len(self.world.invoices) + 1:04d}",
            "parent": {
                "quote_details": None,
                "subscription_details": {"metadata": {}, "subscription": subscription["id"]},
                "type": "subscription_details",
            },
            "period_end": period[1],
            "period_start": period[0],
            "status": "paid" if paid else "open",
            "status_transitions": {"paid_at": created if paid else None},
        }
        self.world.invoices.append(invoice)
        event_type = "invoice.paid" if paid else "invoice.payment_failed"
        self.event(event_type, invoice, charge["created"] if charge else created)

    def subscription(self, customer: dict[str, Any], created: int) -> None:
        price_id = self.rng.choice(sorted(PRICES))
        product, interval, unit_amount = PRICES[price_id]
        quantity = self.rng.choice((1, 1, 1, 2, 3))
        status = self.rng.choices([s for s, _ in STATUSES], [w for _, w in STATUSES])[0]
        cancel_scheduled = status == "active_cancel_scheduled"
        status = "active" if cancel_scheduled else status
        length = PERIOD[interval]
        trial_end = created + 14 * DAY if status == "trialing" else None
        billing_start = trial_end or created
        # Stripe bills each period in advance, at its start.
        periods: list[tuple[int, int]] = []
        start = billing_start
        while start <= self.now - 120 and len(periods) < 6:
            periods.append((start, start + length))
            start += length
        current = periods[-1] if periods else (created, billing_start)
        canceled_at = None
        if status == "canceled":
            canceled_at = min(self.now - 60, current[0] + self.rng.randint(60, DAY))
        subscription = {
            "id": self.id("sub_"),
            "object": "subscription",
            "billing_cycle_anchor": billing_start,
            "cancel_at": current[1] if cancel_scheduled else None,
            "cancel_at_period_end": cancel_scheduled,
            "canceled_at": canceled_at,
            "cancellation_details": {
                "comment": None,
                "feedback": None,
                "reason": "cancellation_requested" if canceled_at else None,
            },
            "collection_method": "charge_automatically",
            "created": created,
            "currency": "usd",
            "customer": customer["id"],
            "ended_at": canceled_at,
            "items": {
                "object": "list",
                "data": [
                    {
                        "id": self.id("si_"),
                        "object": "subscription_item",
                        "created": created,
                        "current_period_end": current[1],
                        "current_period_start": current[0],
                        "metadata": {},
                        "price": {
                            "id": price_id,
                            "object": "price",
                            "active": True,
                            "currency": "usd",
                            "product": product,
                            "recurring": {
                                "interval": interval,
                                "interval_count": 1,
                                "usage_type": "licensed",
                            },
                            "type": "recurring",
                            "unit_amount": unit_amount,
                        },
                        "quantity": quantity,
                        "subscription": None,
                    }
                ],
                "has_more": False,
            },
            "latest_invoice": None,
            "livemode": False,
            "metadata": {},
            "start_date": created,
            "status": status,
            "trial_end": trial_end,
            "trial_start": created if trial_end else None,
        }
        subscription["items"]["data"][0]["subscription"] = subscription["id"]
        first = copy.deepcopy(subscription)
        first.update(
            status="trialing" if trial_end else "active",
            canceled_at=None,
            ended_at=None,
            cancel_at=None,
            cancel_at_period_end=False,
        )
        self.event("customer.subscription.created", first, created)
        self.world.subscriptions.append(subscription)
        amount = unit_amount * quantity
        failing = status in ("past_due", "unpaid", "incomplete")
        for index, period in enumerate(periods):
            last = index == len(periods) - 1
            self.invoice(customer, subscription, amount, period, paid=not (failing and last))
        if status not in ("active", "trialing") or cancel_scheduled:
            previous: dict[str, Any] = {"status": first["status"]}
            if cancel_scheduled:
                previous = {"cancel_at_period_end": False, "cancel_at": None}
            when = canceled_at or (periods[-1][0] + DAY if periods else created + 60)
            event_type = (
                "customer.subscription.deleted"
                if status == "canceled"
                else "customer.subscription.updated"
            )
            self.event(event_type, subscription, min(when, self.now - 30), previous)


def generate_world(
    customers: int,
    *,
    seed: int = 1,
    now: int | None = None,
    history_days: int = 25,
    events: bool = True,
) -> World:
    """A world of `customers` customers whose history spans the last `history_days` days
    (inside the Events API's 30 days, so reconcile can list every event); `events=False`
    skips the events (faster, for backfill benchmarks)."""
    now = int(time.time()) if now is None else now
    maker = _Maker(seed, now, with_events=events)
    span = history_days * DAY
    for index in range(customers):
        created = now - span + (index * span) // max(customers, 1) // 2
        customer = maker.customer(index, created)
        roll = maker.rng.random()
        count = 0 if roll < 0.15 else (2 if roll > 0.9 else 1)
        for number in range(count):
            maker.subscription(customer, created + 60 + number * 3600)
        for _ in range(maker.rng.choice((0, 0, 1, 2))):
            at = maker.rng.randint(created + 60, now - 120)
            maker.charge(customer, maker.rng.choice((500, 1500, 4900)), at, succeeded=True)
    return maker.world


def load_world(fake: FakeStripe, world: World, *, events: bool = True) -> None:
    """Put every object (and, with `events`, every event) of the world into the fake."""
    for obj in world.objects():
        fake.add_object(obj)
    if events:
        for event in world.events:
            fake.add_object(event)
