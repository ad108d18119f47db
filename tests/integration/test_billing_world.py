"""Proof against a reference: 1,000 generated customers' profiles, by backfill and by webhooks.

The expected profile of each customer is computed here, from the world's final Stripe
objects, by a small reference implementation of the README's MRR and profile
definitions written apart from `billbridge.billing` (nothing of it is imported). Then
every person in the fake Customer.io must carry exactly those values: after
`billbridge backfill`, and after the world's events arrive as webhooks in a scrambled
order (a fresh database and workspace).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import pytest

from billbridge.app import create_app
from billbridge.stripe.signature import sign_payload
from tests.e2e.test_delivery_flow import SECRET, _settings
from tests.fakes import customerio as cio_fakes
from tests.fakes import stripe_api as stripe_fakes
from tests.fakes.billing_world import BillingWorld, generate_billing_world, load_billing_world
from tests.fakes.customerio import FakeCustomerIO
from tests.fakes.stripe_api import FakeStripe
from tests.support.live_server import serve_app, wait_until
from tests.support.stripe_jobs import invoke, use_env

fake_stripe = stripe_fakes.fake_stripe
fake_stripe_server = stripe_fakes.fake_stripe_server
fake_customerio = cio_fakes.fake_customerio
fake_customerio_server = cio_fakes.fake_customerio_server

CUSTOMERS = 1000
PER_MONTH = {
    "day": Fraction(365, 12),
    "week": Fraction(52, 12),
    "month": 1,
    "year": Fraction(1, 12),
}
RANK = [
    "active",
    "trialing",
    "past_due",
    "unpaid",
    "paused",
    "incomplete",
    "incomplete_expired",
    "canceled",
]
ATTRIBUTES = (
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


# The reference ---------------------------------------------------------------------------


def _half_up(value: Fraction) -> int:
    return int((value + Fraction(1, 2)) // 1)


def _per_period(price: dict[str, Any], quantity: int | None) -> Fraction | None:
    if price["recurring"]["usage_type"] == "metered":
        return None
    units = 1 if quantity is None else quantity
    transform = price.get("transform_quantity")
    if transform:
        units = -(-units // transform["divide_by"])  # rounded up
    if price.get("billing_scheme") == "tiered":
        total, below = Fraction(0), 0
        for tier in price["tiers"]:
            top = tier["up_to"]
            if units == 0:
                return Fraction(0)
            if price["tiers_mode"] == "volume":
                if top is None or units <= top:
                    return Fraction(units * tier["unit_amount"] + tier["flat_amount"])
                continue
            in_tier = (units if top is None else min(units, top)) - below
            if in_tier > 0:
                total += in_tier * tier["unit_amount"] + tier["flat_amount"]
            if top is None or units <= top:
                return total
            below = top
    return Fraction(Decimal(price["unit_amount_decimal"])) * units


def _per_month(price: dict[str, Any]) -> Fraction:
    recurring = price["recurring"]
    return Fraction(PER_MONTH[recurring["interval"]]) / recurring["interval_count"]


def _item_mrr(item: dict[str, Any]) -> Fraction | None:
    amount = _per_period(item["price"], item.get("quantity"))
    return None if amount is None else amount * _per_month(item["price"])


def _coupon(discount: dict[str, Any]) -> dict[str, Any]:
    return discount.get("coupon") or discount["source"]["coupon"]


def _applies(discount: dict[str, Any], now: int, period: tuple[int, int] | None) -> bool:
    if _coupon(discount)["duration"] == "once" and period is not None:
        return period[0] <= discount["start"] and now < period[1]
    return discount["start"] <= now and (discount["end"] is None or now < discount["end"])


def _subscription_mrr(sub: dict[str, Any], customer: dict[str, Any], now: int) -> int:
    pause = sub.get("pause_collection")
    if pause and (pause["resumes_at"] is None or now < pause["resumes_at"]):
        return 0
    items = sub["items"]["data"]
    parts = [(item, _item_mrr(item)) for item in items]
    licensed = [(item, value) for item, value in parts if value is not None]
    if not licensed:
        return 0
    total = sum((value for _, value in licensed), Fraction(0))
    period = (items[0]["current_period_start"], items[0]["current_period_end"])
    own = [*sub["discounts"], *([sub["discount"]] if sub["discount"] else [])]
    discounts = [d for d in own if _applies(d, now, period)]
    if not discounts and customer["discount"] and _applies(customer["discount"], now, None):
        discounts = [customer["discount"]]
    for discount in discounts:
        coupon = _coupon(discount)
        if coupon["percent_off"] is not None:
            total *= 1 - Fraction(Decimal(str(coupon["percent_off"]))) / 100
        elif coupon["currency"] == sub["currency"]:
            off = coupon["amount_off"] * _per_month(licensed[0][0]["price"])
            total = max(Fraction(0), total - off)
    return _half_up(total)


def _plan(sub: dict[str, Any]) -> dict[str, Any]:
    best, best_value = None, Fraction(-1)
    for item in sub["items"]["data"]:
        value = _item_mrr(item)
        value = Fraction(-1, 2) if value is None else value
        if best is None or value > best_value:
            best, best_value = item, value
    assert best is not None
    price = best["price"]
    amount = price.get("unit_amount")
    if amount is None and price.get("unit_amount_decimal"):
        amount = _half_up(Fraction(Decimal(price["unit_amount_decimal"])))
    return {
        "plan_price_id": price["id"],
        "plan_product_id": price["product"],
        "plan_interval": price["recurring"]["interval"],
        "plan_amount": amount,
    }


def expected_profile(world: BillingWorld, customer: dict[str, Any], now: int) -> dict[str, Any]:
    """The README's profile of one customer, from the world's final objects."""
    cid = customer["id"]
    profile: dict[str, Any] = {
        "email": customer["email"],
        "name": customer["name"],
        "stripe_customer_id": cid,
        "created_at": customer["created"],
        "delinquent": customer["delinquent"],
        "currency": customer["currency"],
    }
    subs = [s for s in world.subscriptions if s["customer"] == cid]
    if subs:
        chosen = sorted(subs, key=lambda s: s["id"], reverse=True)
        chosen = sorted(chosen, key=lambda s: (RANK.index(s["status"]), -s["created"]))[0]
        currency = chosen["currency"]
        by_currency = {currency: 0}
        for sub in subs:
            if sub["status"] in ("active", "past_due"):
                mrr = _subscription_mrr(sub, customer, now)
                by_currency[sub["currency"]] = by_currency.get(sub["currency"], 0) + mrr
        profile.update(
            subscription_id=chosen["id"],
            subscription_status=chosen["status"],
            currency=currency,
            mrr=by_currency[currency],
            metered_items_count=sum(
                1
                for sub in subs
                if sub["status"] in ("active", "past_due", "trialing")
                for item in sub["items"]["data"]
                if item["price"]["recurring"]["usage_type"] == "metered"
            ),
            trial_end=chosen["trial_end"],
            current_period_end=max(i["current_period_end"] for i in chosen["items"]["data"]),
            cancel_at_period_end=chosen["cancel_at_period_end"],
            canceled_at=chosen["canceled_at"],
            **_plan(chosen),
        )
        if len(by_currency) > 1:
            profile["mrr_by_currency"] = dict(sorted(by_currency.items()))
    charges = [c for c in world.charges if c["customer"] == cid]
    if charges:
        paid = [c for c in charges if c["status"] == "succeeded"]
        failed = [c for c in charges if c["status"] == "failed"]
        spent: dict[str, int] = {}
        for charge in paid:
            refunded = sum(r["amount"] for r in world.refunds if r["charge"] == charge["id"])
            code = charge["currency"]
            spent[code] = spent.get(code, 0) + charge["amount"] - refunded
        profile.update(
            total_spent=spent.get(profile["currency"], 0),
            payments_count=len(paid),
            failed_payments_count=len(failed),
            first_payment_at=min((c["created"] for c in paid), default=None),
            last_payment_at=max((c["created"] for c in paid), default=None),
            last_payment_failed_at=max((c["created"] for c in failed), default=None),
            disputes_count=sum(
                1 for d in world.disputes if d["charge"] in {c["id"] for c in charges}
            ),
        )
        if len(spent) > 1:
            profile["total_spent_by_currency"] = dict(sorted(spent.items()))
    return {key: value for key, value in profile.items() if value is not None}


# The checks ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world() -> BillingWorld:
    return generate_billing_world(CUSTOMERS, seed=2026, now=int(time.time()))


def _compare(world: BillingWorld, cio: FakeCustomerIO) -> tuple[int, list[Any], Counter[str]]:
    """(people checked, mismatches, attributes a person still carries that the reference
    profile no longer has, by name) against the reference."""
    people = cio.people
    now = int(time.time())
    mismatches: list[Any] = []
    extra: Counter[str] = Counter()
    for customer in world.customers:
        expected = expected_profile(world, customer, now)
        person = people.get(customer["id"]) or {}
        actual = {key: person[key] for key in ATTRIBUTES if key in person}
        wrong = {
            key: (actual.get(key), value)
            for key, value in expected.items()
            if actual.get(key) != value
        }
        if wrong:
            mismatches.append((customer["id"], wrong))
        extra.update(set(actual) - set(expected))
    return len(world.customers), mismatches, extra


def _report(label: str, checked: int, mismatches: list[Any], extra: Counter[str]) -> None:
    """Every person's billing attributes equal the reference exactly: no wrong value, and
    no stale attribute the reference no longer has (the identify removed it)."""
    stale = sum(extra.values())
    print(
        f"\n{label}: {checked} people checked, {len(mismatches)} mismatches,"
        f" {stale} stale {dict(extra)}"
    )
    assert checked == CUSTOMERS
    assert mismatches == [], json.dumps(mismatches[:5], indent=1)
    assert not extra, dict(extra)


def test_backfill_gives_every_person_the_reference_profile(
    world: BillingWorld,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_stripe: FakeStripe,
    fake_customerio: FakeCustomerIO,
) -> None:
    """`billbridge backfill` of 1,000 customers: every person equals the reference."""
    load_billing_world(fake_stripe, world)
    use_env(monkeypatch, tmp_path, fake_stripe, fake_customerio)
    result = invoke("backfill")
    assert result.exit_code == 0, result.output
    _report("backfill", *_compare(world, fake_customerio))


@pytest.fixture
def app_url(
    tmp_path: Path, fake_stripe: FakeStripe, fake_customerio: FakeCustomerIO
) -> Iterator[tuple[str, Any]]:
    settings = _settings(
        tmp_path,
        fake_customerio,
        STRIPE_API_KEY=fake_stripe.api_key,
        STRIPE_API_BASE=fake_stripe.base_url,
        BILLBRIDGE_TRACK_BATCHING="auto",
    )
    app = create_app(settings, run_worker=True)
    with serve_app(app) as url:
        yield url, app.state.services


def test_scrambled_webhooks_give_every_person_the_reference_profile(
    world: BillingWorld,
    fake_stripe: FakeStripe,
    fake_customerio: FakeCustomerIO,
    app_url: tuple[str, Any],
) -> None:
    """The world's ~5,000 events as signed webhooks in a shuffled order (a fresh
    database): once every delivery is final, every person equals the reference."""
    load_billing_world(fake_stripe, world)  # what identity resolution may read
    url, services = app_url
    events = list(world.events)
    random.Random(7).shuffle(events)

    with httpx.Client(timeout=30) as client:

        def post(event: dict[str, Any]) -> int:
            body = json.dumps(event).encode()
            headers = {
                "Content-Type": "application/json",
                "Stripe-Signature": sign_payload(body, SECRET),
            }
            return client.post(url + "/webhooks/stripe", content=body, headers=headers).status_code

        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(post, events))
    assert set(statuses) == {200}
    store = services.store
    wait_until(lambda: store.stats().queue_depth == 0, timeout=120, interval=0.25)
    by_status = store.stats().deliveries_by_status
    assert by_status.get("failed", 0) == 0, by_status
    _report("webhooks", *_compare(world, fake_customerio))
