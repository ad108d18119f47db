"""MRR as the analytics tools define it: tiers, metered items, discounts, pauses, currencies."""

from __future__ import annotations

from typing import Any

import pytest

from billbridge.billing.completion import needs_expansion
from billbridge.billing.discounts import add_months
from billbridge.billing.profile import profile_from_state
from billbridge.billing.projection import state_of_objects

NOW = 1_780_000_000
DAY = 86_400


def _price(
    amount: int | None = 1000, interval: str = "month", count: int = 1, **extra: Any
) -> dict[str, Any]:
    recurring = {"interval": interval, "interval_count": count, "usage_type": "licensed"}
    recurring.update(extra.pop("recurring", {}))
    return {
        "id": "price_x",
        "product": "prod_x",
        "unit_amount": amount,
        "recurring": recurring,
        **extra,
    }


def _subscription(
    *items: tuple[dict[str, Any], int],
    status: str = "active",
    currency: str = "usd",
    sub_id: str = "sub_1",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "object": "subscription",
        "id": sub_id,
        "customer": "cus_1",
        "status": status,
        "currency": currency,
        "created": 1,
        "items": {
            "data": [
                {
                    "price": price,
                    "quantity": quantity,
                    "current_period_start": NOW - 10 * DAY,
                    "current_period_end": NOW + 20 * DAY,
                }
                for price, quantity in items
            ]
        },
        **extra,
    }


def _coupon(duration: str = "forever", **fields: Any) -> dict[str, Any]:
    return {"object": "coupon", "id": "co_1", "duration": duration, **fields}


def _discount(coupon: dict[str, Any], start: int = NOW - 10 * DAY, end: int | None = None) -> Any:
    return {
        "object": "discount",
        "id": "di_1",
        "source": {"coupon": coupon, "type": "coupon"},
        "start": start,
        "end": end,
    }


def _profile(*objects: dict[str, Any], now: int = NOW) -> dict[str, Any]:
    return profile_from_state("cus_1", state_of_objects(list(objects)), now=now)


GRADUATED = [
    {"up_to": 5, "unit_amount": 1000, "flat_amount": 0},
    {"up_to": 10, "unit_amount": 800, "flat_amount": 500},
    {"up_to": None, "unit_amount": 500, "flat_amount": 0},
]


@pytest.mark.parametrize(
    ("mode", "quantity", "expected"),
    [
        ("graduated", 3, 3000),  # 3 x 1000
        ("graduated", 12, 5000 + 500 + 4000 + 1000),  # 5x1000 + (500 + 5x800) + 2x500
        ("volume", 3, 3000),
        ("volume", 7, 7 * 800 + 500),  # every unit at the tier 7 falls in, plus its flat
        ("volume", 12, 6000),
    ],
)
def test_tiers_apply_to_the_quantity(mode: str, quantity: int, expected: int) -> None:
    """Volume prices every unit at one tier, graduated each unit at its own tier."""
    price = _price(None, billing_scheme="tiered", tiers_mode=mode, tiers=GRADUATED)
    assert _profile(_subscription((price, quantity)))["mrr"] == expected


def test_metered_items_add_no_mrr_and_are_counted() -> None:
    """A metered price adds nothing to MRR; metered_items_count counts it; an unexpanded
    tiered price (no `tiers`) adds nothing either."""
    metered = _price(5, recurring={"usage_type": "metered"})
    unexpanded = _price(None, billing_scheme="tiered", tiers_mode="volume")
    profile = _profile(_subscription((_price(2000), 2), (metered, 1), (unexpanded, 3)))
    assert profile["mrr"] == 4000
    assert profile["metered_items_count"] == 1


@pytest.mark.parametrize(
    ("discount", "expected"),
    [
        (_discount(_coupon(percent_off=25.5)), 7450),  # 10000 x 0.745
        (_discount(_coupon(amount_off=1200, currency="usd")), 8800),
        (_discount(_coupon(amount_off=1200, currency="eur")), 10000),  # other currency
        (_discount(_coupon(amount_off=99999, currency="usd")), 0),  # never below zero
        (_discount(_coupon("repeating", duration_in_months=3, percent_off=50)), 5000),
        (
            _discount(_coupon("repeating", duration_in_months=3, percent_off=50), NOW - 100 * DAY),
            10000,
        ),  # three months from start are over
        (_discount(_coupon(percent_off=50), end=NOW - 1), 10000),  # ended
        (_discount(_coupon(percent_off=50), start=NOW + DAY), 10000),  # not started
        (_discount(_coupon("once", percent_off=50)), 5000),  # in this period
        (_discount(_coupon("once", percent_off=50), NOW - 40 * DAY), 10000),  # used before
    ],
)
def test_subscription_discounts_apply_while_in_force(discount: Any, expected: int) -> None:
    """Percent and amount off, forever/repeating/once, start and end, currency, floor 0."""
    subscription = _subscription((_price(5000), 2), discount=discount)
    assert _profile(subscription)["mrr"] == expected


def test_amount_off_is_per_billing_period_and_stacks_in_order() -> None:
    """A yearly price: 12000 off a year is 1000 a month; two discounts apply in turn."""
    yearly = _price(120_000, "year")
    first = _discount(_coupon(amount_off=12_000, currency="usd"))
    second = {**_discount(_coupon(percent_off=10)), "id": "di_2"}
    subscription = _subscription((yearly, 1), discounts=[first, second, "di_unexpanded"])
    assert _profile(subscription)["mrr"] == 8100  # (10000 - 1000) x 0.9


def test_customer_discount_applies_to_subscriptions_without_their_own() -> None:
    """customer.discount applies only where the subscription has no discount in force."""
    customer = {
        "object": "customer",
        "id": "cus_1",
        "currency": "usd",
        "discount": _discount(_coupon(percent_off=20)),
    }
    plain = _subscription((_price(1000), 1))
    own = _subscription(
        (_price(1000), 1), sub_id="sub_2", discount=_discount(_coupon(percent_off=50))
    )
    assert _profile(customer, plain, own)["mrr"] == 800 + 500


def test_trials_and_pauses_count_zero_and_scheduled_cancellations_count() -> None:
    """Trialing: 0; collection paused (until resumes_at): 0; cancel_at_period_end: counted."""
    assert _profile(_subscription((_price(1000), 1), status="trialing"))["mrr"] == 0
    paused = {"behavior": "void", "resumes_at": NOW + DAY}
    assert _profile(_subscription((_price(1000), 1), pause_collection=paused))["mrr"] == 0
    resumed = {"behavior": "void", "resumes_at": NOW - DAY}
    assert _profile(_subscription((_price(1000), 1), pause_collection=resumed))["mrr"] == 1000
    ending = _subscription((_price(1000), 1), cancel_at_period_end=True)
    assert _profile(ending)["mrr"] == 1000


def test_currencies_never_mix() -> None:
    """mrr and total_spent are in the plan subscription's currency; the by-currency maps
    appear when a second currency is in play; counts take every charge."""
    usd = _subscription((_price(2000), 1), sub_id="sub_a")
    eur = {**_subscription((_price(1500), 1), currency="eur", sub_id="sub_b"), "created": 0}
    charges = [
        {
            "object": "charge",
            "id": f"ch_{i}",
            "customer": "cus_1",
            "status": "succeeded",
            "amount": amount,
            "currency": currency,
            "created": 10 + i,
            "amount_refunded": refunded,
        }
        for i, (amount, currency, refunded) in enumerate(
            [(2000, "usd", 500), (1500, "eur", 0), (1500, "eur", 1500)]
        )
    ]
    profile = _profile(usd, eur, *charges)
    assert (profile["currency"], profile["mrr"]) == ("usd", 2000)
    assert profile["mrr_by_currency"] == {"eur": 1500, "usd": 2000}
    assert (profile["total_spent"], profile["total_spent_by_currency"]) == (
        1500,
        {"eur": 1500, "usd": 1500},
    )
    assert profile["payments_count"] == 3
    single = _profile(usd, charges[0])
    assert "mrr_by_currency" not in single
    assert "total_spent_by_currency" not in single


def test_add_months_clamps_to_the_month_length() -> None:
    """31 January plus one month is the last day of February."""
    jan31 = 1_706_659_200  # 2024-01-31 00:00 UTC
    assert add_months(jan31, 1) == 1_709_164_800  # 2024-02-29


def test_webhook_shapes_that_need_an_expanded_read_are_recognised() -> None:
    """Tiers missing from a tiered price, discounts as ids, a coupon as an id: completion
    reads the object; embedded coupons and per-unit prices need nothing."""
    tiered = _price(None, billing_scheme="tiered", tiers_mode="volume")
    assert needs_expansion(_subscription((tiered, 3)))
    assert not needs_expansion(_subscription((dict(tiered, tiers=GRADUATED), 3)))
    assert needs_expansion(_subscription((_price(), 1), discounts=["di_1"]))
    embedded = _discount(_coupon(percent_off=10))
    assert not needs_expansion(_subscription((_price(), 1), discounts=[embedded]))
    by_id = {**embedded, "source": {"coupon": "co_1", "type": "coupon"}}
    assert needs_expansion({"object": "customer", "id": "cus_1", "discount": by_id})
    assert not needs_expansion({"object": "customer", "id": "cus_1", "discount": None})
    assert not needs_expansion({"object": "charge", "id": "ch_1"})
