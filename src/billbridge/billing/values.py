"""Reading Stripe values for the projection: typed readers, plan items and MRR.

MRR (monthly recurring revenue, minor units) of one item is its price per interval times
its quantity, normalised to a month by the interval and `interval_count`:

    day    x 365/12 / count     (a 100/day price: 3042 a month)
    week   x  52/12 / count     (a 700/week price: 3033 a month)
    month  x      1 / count     (a 3000 per 3 months price: 1000 a month)
    year   x   1/12 / count     (a 12000/year price: 1000 a month)

A subscription's MRR is the sum over its items, computed exactly and rounded half up once
at the end. Items without a recurring interval or an amount (metered, tiered) add nothing;
discounts and taxes are not taken into account.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from fractions import Fraction
from functools import lru_cache
from typing import Any

from billbridge.stripe.events import subscription_items_of

MONTHS_PER: dict[str, Fraction] = {
    "day": Fraction(365, 12),
    "week": Fraction(52, 12),
    "month": Fraction(1),
    "year": Fraction(1, 12),
}


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def as_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def as_text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _id(value: Any) -> str | None:
    return as_text(value.get("id")) if isinstance(value, dict) else as_text(value)


def _amount(price: dict[str, Any]) -> int | None:
    amount = as_int(price.get("unit_amount"))
    if amount is None:
        amount = as_int(price.get("amount"))  # a legacy Plan
    if amount is None and isinstance(price.get("unit_amount_decimal"), str):
        try:
            decimal = Decimal(price["unit_amount_decimal"])
        except InvalidOperation:
            return None
        amount = int(decimal.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return amount


def _summary(price: dict[str, Any], quantity: Any) -> dict[str, Any]:
    recurring = price.get("recurring")
    recurring = recurring if isinstance(recurring, dict) else price  # a Plan is flat
    return {
        "price_id": _id(price.get("id")),
        "product_id": _id(price.get("product")),
        "interval": as_text(recurring.get("interval")),
        "interval_count": as_int(recurring.get("interval_count")) or 1,
        "unit_amount": _amount(price),
        "quantity": as_int(quantity) if as_int(quantity) is not None else 1,
    }


def item_summaries(subscription: dict[str, Any]) -> list[dict[str, Any]]:
    """Price id, product, interval, interval_count, unit_amount and quantity of each item
    (`items.data`, or the legacy top-level `plan` and `quantity`)."""
    summaries: list[dict[str, Any]] = []
    for item in subscription_items_of(subscription):
        price = item.get("price")
        if not isinstance(price, dict):
            price = item.get("plan")
        if isinstance(price, dict):
            summaries.append(_summary(price, item.get("quantity")))
    if not summaries and isinstance(subscription.get("plan"), dict):
        summaries.append(_summary(subscription["plan"], subscription.get("quantity")))
    return summaries


def item_mrr(item: dict[str, Any]) -> Fraction | None:
    """One item's exact monthly amount, or None when it has no interval or amount."""
    return _monthly(
        str(item.get("interval")),
        as_int(item.get("unit_amount")),
        as_int(item.get("interval_count")),
        as_int(item.get("quantity")),
    )


@lru_cache(maxsize=4096)  # a few prices and quantities recur in every event: skip the Fractions
def _monthly(
    interval: str, amount: int | None, interval_count: int | None, quantity: int | None
) -> Fraction | None:
    factor = MONTHS_PER.get(interval)
    if factor is None or amount is None:
        return None
    count = max(interval_count or 1, 1)
    return Fraction(amount) * (1 if quantity is None else quantity) * factor / count


@lru_cache(maxsize=4096)
def round_half_up(value: Fraction) -> int:
    return int((value + Fraction(1, 2)).__floor__()) if value >= 0 else -round_half_up(-value)


def mrr_of_items(items: list[dict[str, Any]]) -> int | None:
    """The monthly amount of a subscription's items (see the module docstring); None when
    no item has both an interval and an amount."""
    parts = [part for part in (item_mrr(item) for item in items) if part is not None]
    if not parts:
        return None
    return round_half_up(parts[0] if len(parts) == 1 else sum(parts, Fraction(0)))


def primary_item(items: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The item the plan attributes describe: the largest monthly amount, first on ties."""
    best: dict[str, Any] | None = None
    best_mrr = Fraction(-1)
    for item in items:
        value = item_mrr(item)
        value = Fraction(-1, 2) if value is None else value
        if best is None or value > best_mrr:
            best, best_mrr = item, value
    return best
