"""Completing a webhook's subscription or customer from the Stripe API for MRR.

    rows = complete_from_api(api, event, memo)   # projection rows to apply, or []

Webhooks carry objects unexpanded: a tiered price without its `tiers`, a subscription's
`discounts` as ids, a discount's `source.coupon` as an id. MRR needs them. When a
delivery that sends the profile handles an event whose subscription or customer lacks
them, the object is read from the API with those fields expanded (a fresh read, never
the cache); its rows go to the projection (written with the batch's outcome) as an API
read at the time of the read, like a backfill: newer than every event created before
it, older than any created after. A failed read is logged and the profile goes out
without it (the next event, or a backfill, completes the object).
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from billbridge.billing.projection import rows_for_object
from billbridge.billing.values import as_text
from billbridge.errors import StripeAPIError
from billbridge.store.records_billing import BillingRow
from billbridge.stripe.api import StripeAPI
from billbridge.stripe.events import object_of, subscription_items_of

EXPAND: dict[str, tuple[str, ...]] = {
    "subscription": ("items.data.price.tiers", "discounts.source.coupon"),
    "customer": ("discount.source.coupon",),
}

log = structlog.get_logger("billbridge.billing")


def _has_coupon(discount: dict[str, Any]) -> bool:
    if isinstance(discount.get("coupon"), dict):
        return True
    source = discount.get("source")
    return isinstance(source, dict) and isinstance(source.get("coupon"), dict)


def needs_expansion(obj: dict[str, Any]) -> bool:
    """Whether MRR needs fields of this subscription or customer that were not expanded."""
    kind = obj.get("object")
    if kind == "subscription":
        for item in subscription_items_of(obj):
            price = item.get("price") if isinstance(item.get("price"), dict) else item.get("plan")
            if (
                isinstance(price, dict)
                and price.get("billing_scheme") == "tiered"
                and not isinstance(price.get("tiers"), list)
            ):
                return True
        listed = obj.get("discounts")
        if isinstance(listed, list) and any(
            not isinstance(d, dict) or not _has_coupon(d) for d in listed
        ):
            return True
    if kind in EXPAND:
        single = obj.get("discount")
        return isinstance(single, dict) and not _has_coupon(single)
    return False


def complete_from_api(
    api: StripeAPI, event: dict[str, Any], memo: dict[Any, Any]
) -> list[BillingRow]:
    """The projection rows of the event's subscription or customer read expanded, when it
    needs it (once per object in a `memo`'s life); empty when nothing was read. Reads
    only: the caller applies the rows (a decision, with its batch's outcome)."""
    obj = object_of(event)
    kind, object_id = as_text(obj.get("object")), as_text(obj.get("id"))
    if kind not in EXPAND or object_id is None or obj.get("deleted") is True:
        return []
    key = ("completed", kind, object_id)
    if key in memo or not needs_expansion(obj):
        return []
    memo[key] = True
    account = as_text(event.get("account"))
    read_at = int(time.time())
    try:
        fetched = api.read_expanded(kind, object_id, EXPAND[kind], account=account)
    except StripeAPIError as exc:
        log.warning("could not complete the object from Stripe", kind=kind, error=str(exc))
        return []
    if fetched is None:
        return []
    return rows_for_object(fetched, watermark=read_at, account=account)
