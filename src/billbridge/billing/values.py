"""Reading Stripe values for the projection: typed readers, plan items and their MRR.

MRR (monthly recurring revenue, minor units) of one licensed item is its amount per
billing period normalised to a month by the interval and `interval_count`:

    day    x 365/12 / count     (a 100/day price: 3042 a month)
    week   x  52/12 / count     (a 700/week price: 3033 a month)
    month  x      1 / count     (a 3000 per 3 months price: 1000 a month)
    year   x   1/12 / count     (a 12000/year price: 1000 a month)

The amount per period is `unit_amount x quantity` (a `transform_quantity` divides the
quantity first, rounding as the price says), or for a tiered price (`tiers_mode`, with
`tiers` expanded) the tiers applied to the quantity: `volume` prices every unit at the
tier the whole quantity falls in (plus that tier's `flat_amount`), `graduated` prices
each unit at the tier it falls in (plus the `flat_amount` of every tier reached).
Metered items (`recurring.usage_type` = `metered`) have no MRR: they are counted apart.
Discounts are applied per subscription (`billbridge.billing.discounts`); a subscription's
MRR is computed exactly and rounded half up once, at the end.
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
TIERS_MODES = frozenset({"volume", "graduated"})


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def as_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def as_text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _id(value: Any) -> str | None:
    return as_text(value.get("id")) if isinstance(value, dict) else as_text(value)


def exact(value: Any) -> Fraction | None:
    """An integer, a decimal string (`unit_amount_decimal`) or a JSON number with a
    fraction (`percent_off`: 25.5, read as written), as an exact Fraction."""
    if as_int(value) is not None:
        return Fraction(value)
    if isinstance(value, Decimal):  # the Stripe SDK's `to_dict()` gives decimals so
        value = str(value)
    if isinstance(value, float):
        value = repr(value)
    if isinstance(value, str):
        try:
            return Fraction(Decimal(value))
        except (InvalidOperation, ValueError, OverflowError):
            return None
    return None


def _amount(price: dict[str, Any], key: str = "unit_amount") -> int | None:
    """An integer amount from `key`, else its `_decimal` twin rounded half up."""
    amount = as_int(price.get(key))
    if amount is None and key == "unit_amount":
        amount = as_int(price.get("amount"))  # a legacy Plan
    decimal = price.get(f"{key}_decimal")
    decimal = str(decimal) if isinstance(decimal, Decimal) else decimal
    if amount is None and isinstance(decimal, str):
        try:
            return int(Decimal(decimal).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        except InvalidOperation:
            return None
    return amount


def _exact_text(price: dict[str, Any], key: str) -> str | int | None:
    """The amount as stored in an item summary: the decimal string when Stripe gives one
    with a fraction of a minor unit, else the integer."""
    decimal = price.get(f"{key}_decimal")
    decimal = str(decimal) if isinstance(decimal, Decimal) else decimal
    if isinstance(decimal, str) and exact(decimal) is not None:
        value = exact(decimal)
        if value is not None and value.denominator != 1:
            return decimal
    return _amount(price, key)


def _tiers(price: dict[str, Any]) -> list[dict[str, Any]] | None:
    tiers = price.get("tiers")
    if as_text(price.get("tiers_mode")) not in TIERS_MODES or not isinstance(tiers, list):
        return None
    read: list[dict[str, Any]] = []
    for tier in tiers:
        if not isinstance(tier, dict):
            return None
        read.append(
            {
                "up_to": as_int(tier.get("up_to")),  # None: "inf", the last tier
                "unit": _exact_text(tier, "unit_amount") or 0,
                "flat": _exact_text(tier, "flat_amount") or 0,
            }
        )
    return read


def _summary(price: dict[str, Any], quantity: Any) -> dict[str, Any]:
    recurring = price.get("recurring")
    recurring = recurring if isinstance(recurring, dict) else price  # a Plan is flat
    summary: dict[str, Any] = {
        "price_id": _id(price.get("id")),
        "product_id": _id(price.get("product")),
        "interval": as_text(recurring.get("interval")),
        "interval_count": as_int(recurring.get("interval_count")) or 1,
        "unit_amount": _amount(price),
        "quantity": as_int(quantity) if as_int(quantity) is not None else 1,
    }
    # Only what differs from a plain per-unit licensed price, to keep rows small.
    if recurring.get("usage_type") == "metered":
        summary["usage_type"] = "metered"
    unit = _exact_text(price, "unit_amount")
    if isinstance(unit, str):
        summary["unit_amount_decimal"] = unit
    tiers = _tiers(price)
    if tiers is not None:
        summary["tiers_mode"] = price["tiers_mode"]
        summary["tiers"] = tiers
    elif as_text(price.get("billing_scheme")) == "tiered":
        summary["tiers_mode"] = as_text(price.get("tiers_mode")) or "unknown"  # not expanded
    transform = price.get("transform_quantity")
    if isinstance(transform, dict) and (as_int(transform.get("divide_by")) or 0) > 1:
        summary["divide_by"] = transform["divide_by"]
        summary["round"] = "down" if transform.get("round") == "down" else "up"
    return summary


def item_summaries(subscription: dict[str, Any]) -> list[dict[str, Any]]:
    """Price id, product, interval, interval_count, unit_amount and quantity of each item
    (`items.data`, or the legacy top-level `plan` and `quantity`), plus `usage_type`,
    tiers and `transform_quantity` when the price has them."""
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


def is_metered(item: dict[str, Any]) -> bool:
    return item.get("usage_type") == "metered"


def tiered_amount(mode: str, tiers: list[dict[str, Any]], quantity: int) -> Fraction | None:
    """The amount of `quantity` units under `volume` or `graduated` tiers (see the module
    docstring); None when the tiers do not cover the quantity."""
    if quantity <= 0:
        return Fraction(0)
    lower = 0
    total = Fraction(0)
    for tier in tiers:
        up_to = as_int(tier.get("up_to"))
        unit = exact(tier.get("unit")) or Fraction(0)
        flat = exact(tier.get("flat")) or Fraction(0)
        if mode == "volume":
            if up_to is None or quantity <= up_to:
                return unit * quantity + flat
        else:
            units = quantity - lower if up_to is None else min(quantity, up_to) - lower
            if units > 0:
                total += unit * units + flat
            if up_to is None or quantity <= up_to:
                return total
            lower = up_to
    return None


def _quantity(item: dict[str, Any]) -> int:
    quantity = as_int(item.get("quantity"))
    quantity = 1 if quantity is None else quantity
    divide_by = as_int(item.get("divide_by")) or 1
    if divide_by > 1:
        whole, rest = divmod(quantity, divide_by)
        return whole + (1 if rest and item.get("round") != "down" else 0)
    return quantity


def period_amount(item: dict[str, Any]) -> Fraction | None:
    """One licensed item's amount per billing period, or None (metered, no amount, tiers
    not known)."""
    if is_metered(item):
        return None
    quantity = _quantity(item)
    mode = item.get("tiers_mode")
    if mode is not None:
        tiers = item.get("tiers")
        if mode not in TIERS_MODES or not isinstance(tiers, list):
            return None
        return tiered_amount(str(mode), tiers, quantity)
    unit = exact(item.get("unit_amount_decimal")) or exact(item.get("unit_amount"))
    return None if unit is None else unit * quantity


def months_factor(item: dict[str, Any]) -> Fraction | None:
    """Months per billing period, inverted: what a per-period amount is multiplied by."""
    factor = MONTHS_PER.get(str(item.get("interval")))
    if factor is None:
        return None
    return factor / max(as_int(item.get("interval_count")) or 1, 1)


def item_mrr(item: dict[str, Any]) -> Fraction | None:
    """One item's exact monthly amount, or None when it has none (metered, no interval,
    no amount, tiers not expanded)."""
    if "tiers" not in item and "divide_by" not in item and "unit_amount_decimal" not in item:
        if is_metered(item) or item.get("tiers_mode") is not None:
            return None
        return _monthly(
            str(item.get("interval")),
            as_int(item.get("unit_amount")),
            as_int(item.get("interval_count")),
            as_int(item.get("quantity")),
        )
    factor = months_factor(item)
    amount = period_amount(item)
    return None if factor is None or amount is None else amount * factor


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


def exact_mrr_of_items(items: list[dict[str, Any]]) -> Fraction | None:
    """The exact monthly amount of a subscription's items before discounts; None when no
    item has one."""
    parts = [part for part in (item_mrr(item) for item in items) if part is not None]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else sum(parts, Fraction(0))


def mrr_of_items(items: list[dict[str, Any]]) -> int | None:
    """The monthly amount of a subscription's items before discounts (see the module
    docstring), rounded half up; None when no item has both an interval and an amount."""
    value = exact_mrr_of_items(items)
    return None if value is None else round_half_up(value)


def metered_count(items: list[dict[str, Any]]) -> int:
    return sum(1 for item in items if is_metered(item))


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
