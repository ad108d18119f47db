"""Discounts and pauses for MRR: what the projection keeps of them, and when they count.

    summaries = discount_summaries(subscription, period=(start, end))   # stored
    mrr = subscription_mrr(row, customer_discounts, now=now)            # minor units

A discount counts only with its coupon embedded (`discount.coupon`, or `source.coupon`
since API 2025-09-30.clover; a bare id says nothing of the amount). A coupon takes
`percent_off` of the amount left, or `amount_off` (in the coupon's `currency`, or its
`currency_options`, per billing period: normalised to a month like the prices) down to
zero; a coupon in another currency than the subscription's does not apply. Several
discounts apply in their listed order. In force (`start <= now < end`):

- `forever`: no end unless Stripe gives one;
- `repeating`: until the discount's `end` (or `start` + `duration_in_months`);
- `once`: on a subscription, during the billing period it was applied in (its `start`
  is at or after the current period's start, until that period ends); on a customer,
  while the customer still carries it (Stripe removes it once used).

A subscription's own discounts replace the customer's (Stripe applies the customer's
discount only to subscriptions without one of their own). A subscription whose
collection is paused (`pause_collection`, until `resumes_at`) has no MRR.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from billbridge.billing.values import (
    as_int,
    as_text,
    exact,
    exact_mrr_of_items,
    is_metered,
    months_factor,
    round_half_up,
)


def _coupon(discount: dict[str, Any]) -> dict[str, Any] | None:
    coupon = discount.get("coupon")
    if not isinstance(coupon, dict):
        source = discount.get("source")
        coupon = source.get("coupon") if isinstance(source, dict) else None
    return coupon if isinstance(coupon, dict) else None


def add_months(timestamp: int, months: int) -> int:
    """`timestamp` plus calendar months (UTC), the day clamped to the month's length."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return int(moment.replace(year=year, month=month, day=day).timestamp())


def _summary(
    discount: dict[str, Any], period: tuple[int | None, int | None] | None
) -> dict[str, Any] | None:
    coupon = _coupon(discount)
    if coupon is None:
        return None
    percent = coupon.get("percent_off")
    amounts: dict[str, int] = {}
    amount_off, currency = as_int(coupon.get("amount_off")), as_text(coupon.get("currency"))
    if amount_off is not None and currency is not None:
        amounts[currency.lower()] = amount_off
        options = coupon.get("currency_options")
        for code, option in (options if isinstance(options, dict) else {}).items():
            other = as_int(option.get("amount_off")) if isinstance(option, dict) else None
            if other is not None:
                amounts.setdefault(str(code).lower(), other)
    if exact(percent) is None and not amounts:
        return None
    duration = as_text(coupon.get("duration")) or "forever"
    start, end = as_int(discount.get("start")), as_int(discount.get("end"))
    months = as_int(coupon.get("duration_in_months"))
    if duration == "repeating" and end is None and start is not None and months:
        end = add_months(start, months)
    if duration == "once" and period is not None:
        period_start, period_end = period
        used = start is not None and period_start is not None and start < period_start
        end = start if used else period_end
    summary: dict[str, Any] = {"duration": duration, "start": start, "end": end}
    if exact(percent) is not None:
        summary["percent_off"] = str(percent)
    if amounts:
        summary["amount_off"] = amounts
    return summary


def _discount_objects(owner: dict[str, Any]) -> list[dict[str, Any]]:
    """`discounts` (objects only: ids carry no coupon), else the legacy single `discount`."""
    listed = owner.get("discounts")
    found = [d for d in listed if isinstance(d, dict)] if isinstance(listed, list) else []
    single = owner.get("discount")
    if isinstance(single, dict) and all(d.get("id") != single.get("id") for d in found):
        found.append(single)
    return found


def discount_summaries(
    owner: dict[str, Any], period: tuple[int | None, int | None] | None = None
) -> list[dict[str, Any]]:
    """What the projection keeps of a subscription's (with its current `period`) or a
    customer's (no period) discounts: percent, amount by currency, duration, start, end."""
    summaries = [_summary(discount, period) for discount in _discount_objects(owner)]
    return [summary for summary in summaries if summary is not None]


def pause_of(subscription: dict[str, Any]) -> dict[str, Any] | None:
    """`pause_collection` as kept: its behavior and `resumes_at` (None: not paused)."""
    pause = subscription.get("pause_collection")
    if not isinstance(pause, dict):
        return None
    return {
        "behavior": as_text(pause.get("behavior")),
        "resumes_at": as_int(pause.get("resumes_at")),
    }


def in_force(summary: dict[str, Any], now: int) -> bool:
    start, end = as_int(summary.get("start")), as_int(summary.get("end"))
    return (start is None or start <= now) and (end is None or now < end)


def is_paused(pause: Any, now: int) -> bool:
    if not isinstance(pause, dict):
        return False
    resumes_at = as_int(pause.get("resumes_at"))
    return resumes_at is None or now < resumes_at


def apply_discounts(
    amount: Fraction, discounts: list[dict[str, Any]], currency: str | None, factor: Fraction
) -> Fraction:
    """`amount` (a month) after each discount in turn, never below zero; `factor` turns an
    amount off per billing period into a month."""
    for discount in discounts:
        percent = exact(discount.get("percent_off"))
        if percent is not None:
            amount -= amount * percent / 100
            continue
        amounts = discount.get("amount_off")
        off = amounts.get((currency or "").lower()) if isinstance(amounts, dict) else None
        if isinstance(off, int):
            amount = max(Fraction(0), amount - off * factor)
    return max(Fraction(0), amount)


def subscription_mrr(
    subscription: dict[str, Any], customer_discounts: list[dict[str, Any]], *, now: int
) -> int | None:
    """The MRR of a projected subscription at `now` (its status aside): its items after
    the discounts in force; 0 while collection is paused; None without a licensed amount."""
    items = list(subscription.get("items") or [])
    value = exact_mrr_of_items(items)
    if value is None:
        return None
    if is_paused(subscription.get("pause_collection"), now):
        return 0
    own = [d for d in subscription.get("discounts") or [] if in_force(d, now)]
    discounts = own or [d for d in customer_discounts if in_force(d, now)]
    if discounts:
        licensed = [item for item in items if not is_metered(item) and months_factor(item)]
        factor = months_factor(licensed[0]) if licensed else None
        value = apply_discounts(
            value, discounts, subscription.get("currency"), factor or Fraction(0)
        )
    return round_half_up(value)
