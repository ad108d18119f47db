"""Stripe's expandable fields in the fakes: what an object looks like unexpanded.

rendered(subscription)                              # as in a webhook: nothing expanded
rendered(subscription, {"items.data.price.tiers"})  # as `expand[]=items.data.price.tiers`
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from typing import Any


def _coupon_as_id(discount: dict[str, Any], expanded: bool) -> None:
    source = discount.get("source")
    if not expanded and isinstance(source, dict) and isinstance(source.get("coupon"), dict):
        source["coupon"] = source["coupon"]["id"]


def rendered(obj: dict[str, Any], expand: Collection[str] = ()) -> dict[str, Any]:
    """`obj` as Stripe sends it with only the `expand` paths expanded (relative to the
    object; webhooks expand nothing): a subscription's `items.data.price.tiers`, its
    `discounts` (ids otherwise) and their `discounts.source.coupon`, and a customer's or
    subscription's `discount.source.coupon` (an id otherwise). The fake stores objects
    fully expanded; other kinds are returned as stored."""
    kind = obj.get("object")
    if kind not in ("subscription", "customer"):
        return obj
    paths = set(expand)
    for path in expand:  # expanding a nested field expands the fields on its way
        parts = path.split(".")
        paths.update(".".join(parts[:end]) for end in range(1, len(parts)))
    expand = paths
    out = copy.deepcopy(obj)
    if kind == "subscription":
        if "items.data.price.tiers" not in expand:
            for item in (out.get("items") or {}).get("data") or []:
                if isinstance(item.get("price"), dict):
                    item["price"].pop("tiers", None)
        discounts = out.get("discounts")
        if isinstance(discounts, list):
            if "discounts" in expand:
                for discount in discounts:
                    if isinstance(discount, dict):
                        _coupon_as_id(discount, "discounts.source.coupon" in expand)
            else:
                out["discounts"] = [d["id"] if isinstance(d, dict) else d for d in discounts]
    single = out.get("discount")
    if isinstance(single, dict):
        _coupon_as_id(single, "discount.source.coupon" in expand)
    return out
