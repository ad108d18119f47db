"""A generated Stripe account for billing-profile proofs: discounts, tiers, currencies.

    world = generate_billing_world(1000, seed=5)
    load_billing_world(fake_stripe, world)    # objects into FakeStripe (for backfill)
    world.events                              # the webhooks Stripe would have sent

Richer than `stripe_world` on what MRR reads: every coupon kind (percent, amount) and
duration (once, repeating, forever) on subscriptions (`discounts`, legacy `discount`) and
on customers, volume and graduated tiers, package pricing (`transform_quantity`),
decimal unit amounts, metered items, day/week/month/quarter/year prices, trials, three
currencies (a few customers pay in two), paused collection and paused subscriptions,
scheduled and done cancellations, failed charges, partial and full refunds, disputes.
The fake Stripe API stores the objects fully expanded and renders them as Stripe does
(`tests.fakes.stripe_expand`); the events carry them unexpanded, as webhooks do (no
tiers, discounts as ids, coupons as ids). Each object's events carry strictly increasing
`created`, the last one its final state,
so any arrival order projects to the final state. Times keep clear of `now` by more
than a day (discount ends, periods, pauses), so a profile computed a little later is
the same. Deterministic for a seed and `now`.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.stripe_api import FakeStripe
from tests.fakes.stripe_expand import rendered

DAY = 86_400
API_VERSION = "2026-10-28.endive"
CURRENCIES = ("usd", "eur", "gbp")
TIERS = [
    {"up_to": 10, "unit_amount": 1000, "flat_amount": 0},
    {"up_to": 50, "unit_amount": 800, "flat_amount": 500},
    {"up_to": None, "unit_amount": 500, "flat_amount": 2000},
]
# name -> (interval, interval_count, price fields beyond the recurring part)
PRICES: dict[str, tuple[str, int, dict[str, Any]]] = {
    "basic_month": ("month", 1, {"unit_amount": 900}),
    "pro_month": ("month", 1, {"unit_amount": 2900}),
    "pro_year": ("year", 1, {"unit_amount": 29000}),
    "team_quarter": ("month", 3, {"unit_amount": 7500}),
    "news_week": ("week", 1, {"unit_amount": 500}),
    "api_day": ("day", 1, {"unit_amount": 100}),
    "seats_volume": ("month", 1, {"billing_scheme": "tiered", "tiers_mode": "volume"}),
    "seats_graduated": ("month", 1, {"billing_scheme": "tiered", "tiers_mode": "graduated"}),
    "packs_of_10": (
        "month",
        1,
        {"unit_amount": 1000, "transform_quantity": {"divide_by": 10, "round": "up"}},
    ),
    "precise_month": ("month", 1, {"unit_amount": None, "unit_amount_decimal": "1250.5"}),
}
FLAT_PRICES = ("basic_month", "pro_month", "pro_year", "team_quarter", "news_week", "api_day")
STATUSES = (
    ("active", 40),
    ("trialing", 10),
    ("past_due", 8),
    ("canceled", 10),
    ("unpaid", 3),
    ("incomplete", 4),
    ("paused", 5),
    ("pause_collection", 7),
    ("cancel_at_period_end", 8),
    ("resumed", 5),
)


@dataclass
class BillingWorld:
    """The account's objects by kind and the events Stripe sent about them."""

    now: int
    customers: list[dict[str, Any]] = field(default_factory=list)
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    charges: list[dict[str, Any]] = field(default_factory=list)
    refunds: list[dict[str, Any]] = field(default_factory=list)
    disputes: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def objects(self) -> list[dict[str, Any]]:
        return [*self.customers, *self.subscriptions, *self.charges, *self.refunds, *self.disputes]


class _Maker:
    def __init__(self, seed: int, now: int) -> None:
        self.rng = random.Random(seed)
        self.now = now
        self.world = BillingWorld(now=now)
        self.sequence = 0

    def id(self, prefix: str) -> str:
        self.sequence += 1
        return f"{prefix}{self.sequence:07d}{self.rng.randrange(16**6):06x}"

    def event(
        self, event_type: str, obj: dict[str, Any], created: int, previous: Any = None
    ) -> None:
        assert created < self.now, (event_type, created, self.now)
        # As a webhook carries it: tiers, discounts and coupons not expanded.
        data: dict[str, Any] = {"object": rendered(copy.deepcopy(obj))}
        if previous is not None:
            data["previous_attributes"] = previous
        self.world.events.append(
            {
                "id": self.id("evt_b"),
                "object": "event",
                "api_version": API_VERSION,
                "created": created,
                "data": data,
                "livemode": False,
                "pending_webhooks": 1,
                "request": {"id": None, "idempotency_key": None},
                "type": event_type,
            }
        )

    # Coupons and discounts ----------------------------------------------------------------

    def coupon(self, currency: str) -> dict[str, Any]:
        duration = self.rng.choice(("once", "repeating", "forever"))
        coupon: dict[str, Any] = {
            "id": self.id("co_"),
            "object": "coupon",
            "amount_off": None,
            "currency": None,
            "duration": duration,
            "duration_in_months": self.rng.choice((1, 3, 6)) if duration == "repeating" else None,
            "livemode": False,
            "percent_off": None,
            "valid": True,
        }
        if self.rng.random() < 0.5:
            coupon["percent_off"] = self.rng.choice((10, 25, 12.5, 50, 100))
        else:
            coupon["amount_off"] = self.rng.choice((300, 1000, 5000))
            # Now and then a coupon in another currency: it does not apply.
            coupon["currency"] = currency if self.rng.random() < 0.85 else "jpy"
        return coupon

    def discount(
        self,
        coupon: dict[str, Any],
        start: int,
        *,
        customer: str,
        subscription: str | None,
        legacy: bool | None = None,
    ) -> dict[str, Any]:
        end = None
        if coupon["duration"] == "repeating":
            end = start + coupon["duration_in_months"] * 30 * DAY
            if abs(end - self.now) < 2 * DAY:
                end = self.now + 3 * DAY
        if legacy is None:  # API versions before clover: the coupon embedded as `coupon`
            legacy = self.rng.random() < 0.3
        discount: dict[str, Any] = {
            "id": self.id("di_"),
            "object": "discount",
            "customer": customer,
            "end": end,
            "start": start,
            "subscription": subscription,
            "promotion_code": None,
        }
        if legacy:
            discount["coupon"] = coupon
        else:
            discount["source"] = {"coupon": coupon, "type": "coupon"}
        return discount

    # Objects --------------------------------------------------------------------------

    def customer(self, index: int, created: int, currency: str) -> dict[str, Any]:
        customer = {
            "id": self.id("cus_"),
            "object": "customer",
            "balance": 0,
            "created": created,
            "currency": currency,
            "delinquent": False,
            "discount": None,
            "email": f"person{index}@example.com",
            "livemode": False,
            "metadata": {},
            "name": f"Person {index}",
        }
        self.world.customers.append(customer)
        self.event("customer.created", customer, created)
        return customer

    def price(self, name: str, currency: str) -> dict[str, Any]:
        interval, count, fields = PRICES[name]
        price: dict[str, Any] = {
            "id": f"price_{name}_{currency}",
            "object": "price",
            "active": True,
            "billing_scheme": "per_unit",
            "currency": currency,
            "product": f"prod_{name.split('_', maxsplit=1)[0]}",
            "recurring": {"interval": interval, "interval_count": count, "usage_type": "licensed"},
            "tiers_mode": None,
            "transform_quantity": None,
            "type": "recurring",
            "unit_amount": None,
            **copy.deepcopy(fields),
        }
        if price["unit_amount"] is not None and "unit_amount_decimal" not in fields:
            price["unit_amount_decimal"] = str(price["unit_amount"])
        if price["billing_scheme"] == "tiered":
            price["tiers"] = copy.deepcopy(TIERS)
        return price

    def metered_price(self, currency: str) -> dict[str, Any]:
        price = self.price("basic_month", currency)
        price.update(id=f"price_calls_{currency}", product="prod_calls", unit_amount=5)
        price["unit_amount_decimal"] = "5"
        price["recurring"]["usage_type"] = "metered"
        return price

    def items(self, currency: str, created: int, period: tuple[int, int]) -> dict[str, Any]:
        roll = self.rng.random()
        if roll < 0.55:
            name, quantity = self.rng.choice(FLAT_PRICES), self.rng.choice((1, 1, 2, 3))
        elif roll < 0.85:
            name = self.rng.choice(("seats_volume", "seats_graduated", "packs_of_10"))
            quantity = self.rng.choice((0, 1, 7, 10, 11, 50, 51, 120))
        else:
            name, quantity = "precise_month", self.rng.choice((1, 3))
        interval, count, _ = PRICES[name]
        if interval != "month" or count != 1:  # every item of a subscription bills together
            extra = None
        elif self.rng.random() < 0.25:
            extra = (self.metered_price(currency), None)
        elif self.rng.random() < 0.15:
            extra = (self.price("basic_month", currency), 2)
        else:
            extra = None
        prices = [(self.price(name, currency), quantity), *([extra] if extra else [])]
        data = []
        for price, amount in prices:
            item: dict[str, Any] = {
                "id": self.id("si_"),
                "object": "subscription_item",
                "created": created,
                "current_period_start": period[0],
                "current_period_end": period[1],
                "discounts": [],
                "price": price,
            }
            if amount is not None:
                item["quantity"] = amount
            data.append(item)
        return {"object": "list", "data": data, "has_more": False}

    def period(self, created: int, interval: str, count: int) -> tuple[int, int]:
        """The current period: it started 2-20 days ago (or at creation) and ends after now."""
        length = {"day": DAY, "week": 7 * DAY, "month": 30 * DAY, "year": 365 * DAY}[interval]
        length *= count
        if length < 4 * DAY:  # a daily price: a period shorter than the safety margins
            return (self.now - DAY // 2 - 3600, self.now + DAY // 2 + 3600)
        start = max(created, self.now - self.rng.randint(2, min(20, length // DAY - 2)) * DAY)
        return (start, start + length)

    def subscription(self, customer: dict[str, Any], created: int, currency: str) -> None:
        status = self.rng.choices([s for s, _ in STATUSES], [w for _, w in STATUSES])[0]
        sub_id = self.id("sub_")
        probe = self.items(currency, created, (0, 0))
        first_price = probe["data"][0]["price"]["recurring"]
        period = self.period(created, first_price["interval"], first_price["interval_count"])
        for item in probe["data"]:
            item["current_period_start"], item["current_period_end"] = period
            item["subscription"] = sub_id
        trial_end = period[1] if status == "trialing" else None
        subscription: dict[str, Any] = {
            "id": sub_id,
            "object": "subscription",
            "billing_cycle_anchor": period[0],
            "cancel_at": None,
            "cancel_at_period_end": False,
            "canceled_at": None,
            "cancellation_details": {"comment": None, "feedback": None, "reason": None},
            "collection_method": "charge_automatically",
            "created": created,
            "currency": currency,
            "customer": customer["id"],
            "discount": None,
            "discounts": [],
            "ended_at": None,
            "items": probe,
            "livemode": False,
            "metadata": {},
            "pause_collection": None,
            "start_date": created,
            "status": "trialing" if status == "trialing" else "active",
            "trial_end": trial_end,
            "trial_start": created if trial_end else None,
        }
        self.event("customer.subscription.created", subscription, created)
        previous: dict[str, Any] = {}
        if self.rng.random() < 0.4:
            self.add_discount(subscription, customer, period)
            previous["discounts"] = []
        self.final_state(subscription, status, period, previous)
        self.world.subscriptions.append(subscription)

    def add_discount(
        self, subscription: dict[str, Any], customer: dict[str, Any], period: tuple[int, int]
    ) -> None:
        coupon = self.coupon(subscription["currency"])
        if coupon["duration"] == "once" and self.rng.random() < 0.5:
            start = period[0] - 3 * DAY  # applied to an earlier period's invoice: used
        elif coupon["duration"] == "repeating" and self.rng.random() < 0.6:
            start = subscription["created"] + 3600  # weeks ago: it may have ended
        else:
            start = period[0] + 3600
        start = min(max(start, subscription["created"] + 60), self.now - 2 * DAY)
        single = self.rng.random() < 0.3  # the single `discount` of API versions before basil
        discount = self.discount(
            coupon,
            start,
            customer=customer["id"],
            subscription=subscription["id"],
            legacy=True if single else None,
        )
        if single:
            subscription["discount"] = discount
        else:
            subscription["discounts"] = [discount]

    def final_state(
        self,
        subscription: dict[str, Any],
        status: str,
        period: tuple[int, int],
        previous: dict[str, Any],
    ) -> None:
        at = self.now - self.rng.randint(2 * 3600, DAY)
        at = max(at, subscription["created"] + 2 * 3600)
        if status == "canceled":
            previous["status"] = subscription["status"]
            subscription.update(status="canceled", canceled_at=at, ended_at=at)
            subscription["cancellation_details"]["reason"] = "cancellation_requested"
            self.event("customer.subscription.deleted", subscription, at, previous)
            return
        if status in ("past_due", "unpaid", "incomplete", "paused"):
            previous["status"] = subscription["status"]
            subscription["status"] = status
        elif status == "pause_collection":
            previous["pause_collection"] = None
            resumes = self.rng.choice((None, self.now + 10 * DAY))
            subscription["pause_collection"] = {"behavior": "void", "resumes_at": resumes}
        elif status == "resumed":  # paused collection, resumed since: two updates
            paused_at = at - 3600
            subscription["pause_collection"] = {"behavior": "keep_as_draft", "resumes_at": None}
            self.event(
                "customer.subscription.updated", subscription, paused_at, {"pause_collection": None}
            )
            previous["pause_collection"] = subscription["pause_collection"]
            subscription["pause_collection"] = None
        elif status == "cancel_at_period_end":
            previous.update(cancel_at_period_end=False, cancel_at=None)
            subscription.update(cancel_at_period_end=True, cancel_at=period[1])
        if previous:
            self.event("customer.subscription.updated", subscription, at, previous)

    def charge(self, customer: dict[str, Any], currency: str, created: int) -> None:
        succeeded = self.rng.random() < 0.85
        amount = self.rng.choice((500, 1500, 2900, 4900, 12000))
        charge: dict[str, Any] = {
            "id": self.id("ch_"),
            "object": "charge",
            "amount": amount,
            "amount_captured": amount if succeeded else 0,
            "amount_refunded": 0,
            "billing_details": {"email": None, "name": customer["name"]},
            "captured": succeeded,
            "created": created,
            "currency": currency,
            "customer": customer["id"],
            "disputed": False,
            "failure_code": None if succeeded else "card_declined",
            "failure_message": None if succeeded else "Your card was declined.",
            "livemode": False,
            "outcome": {"type": "authorized" if succeeded else "issuer_declined"},
            "paid": succeeded,
            "payment_intent": self.id("pi_"),
            "refunded": False,
            "status": "succeeded" if succeeded else "failed",
        }
        self.world.charges.append(charge)
        self.event("charge.succeeded" if succeeded else "charge.failed", charge, created)
        if not succeeded:
            return
        at = created
        for _ in range(self.rng.choice((0, 0, 0, 0, 0, 1, 1, 2))):
            at += self.rng.randint(600, 3 * DAY)
            left = charge["amount"] - charge["amount_refunded"]
            if at >= self.now - 60 or left <= 0:
                break
            amount = left if self.rng.random() < 0.4 else max(1, left // 3)
            refund = {
                "id": self.id("re_"),
                "object": "refund",
                "amount": amount,
                "charge": charge["id"],
                "created": at,
                "currency": currency,
                "payment_intent": charge["payment_intent"],
                "status": "succeeded",
            }
            self.world.refunds.append(refund)
            previous = {"amount_refunded": charge["amount_refunded"], "refunded": False}
            charge["amount_refunded"] += amount
            charge["refunded"] = charge["amount_refunded"] == charge["amount"]
            self.event("charge.refunded", charge, at, previous)
        if self.rng.random() < 0.06 and at + 3600 < self.now - 60:
            dispute = {
                "id": self.id("dp_"),
                "object": "dispute",
                "amount": charge["amount"],
                "charge": charge["id"],
                "created": at + 3600,
                "currency": currency,
                "livemode": False,
                "payment_intent": charge["payment_intent"],
                "reason": "fraudulent",
                "status": "needs_response",
            }
            self.world.disputes.append(dispute)
            self.event("charge.dispute.created", dispute, at + 3600)


def generate_billing_world(customers: int, *, seed: int, now: int) -> BillingWorld:
    """A world of `customers` customers created 60 to 5 days before `now` (so that some
    repeating discounts have ended)."""
    maker = _Maker(seed, now)
    for index in range(customers):
        created = now - 60 * DAY + index * (55 * DAY) // max(customers, 1)
        currency = CURRENCIES[maker.rng.randrange(3)]
        customer = maker.customer(index, created, currency)
        roll = maker.rng.random()
        count = 0 if roll < 0.12 else (2 if roll > 0.85 else 1)
        for number in range(count):
            # A second subscription is now and then in another currency.
            other = currency
            if number == 1 and maker.rng.random() < 0.4:
                other = CURRENCIES[(CURRENCIES.index(currency) + 1) % 3]
            maker.subscription(customer, created + 60 + number * 3600, other)
        for _ in range(maker.rng.choice((0, 1, 1, 2, 3))):
            at = maker.rng.randint(created + 120, now - 2 * DAY)
            pay_in = currency if maker.rng.random() < 0.9 else CURRENCIES[(index + 2) % 3]
            maker.charge(customer, pay_in, at)
        updated: dict[str, Any] = {}
        if maker.rng.random() < 0.12:
            coupon = maker.coupon(currency)
            start = min(created + DAY, now - 2 * DAY)
            customer["discount"] = maker.discount(
                coupon, start, customer=customer["id"], subscription=None
            )
            updated["discount"] = None
        if any(
            s["customer"] == customer["id"] and s["status"] in ("past_due", "unpaid")
            for s in maker.world.subscriptions
        ):
            customer["delinquent"] = True
            updated["delinquent"] = False
        if updated:
            maker.event(
                "customer.updated", customer, now - 3600 - maker.rng.randint(0, 600), updated
            )
    return maker.world


def load_billing_world(fake: FakeStripe, world: BillingWorld) -> None:
    """Every object of the world into the fake Stripe API (events are posted as webhooks)."""
    for obj in world.objects():
        fake.add_object(obj)
