"""Semantic events: what a Stripe change means, with before and after values.

    changes = derive_changes(event, store)   # {"subscription_upgraded": {...}, ...}

The template context exposes the result as `changes`; each semantic default workflow
filters on its name (`changes.subscription_upgraded`) and sends `before`/`after` in the
event data. Derived from the event itself (`data.previous_attributes`) and, for
`payment_recovered`, from the projection:

- `subscription_upgraded` / `subscription_downgraded`: a `customer.subscription.updated`
  whose items (or legacy plan/quantity, or discounts) changed and whose MRR went up /
  down, or whose plan (the primary item's price or product) changed at an unchanged
  interval: by MRR, a tie (the same price on another product) counting as an upgrade.
  The MRR compared is the subscription's own (`billbridge.billing.discounts`: its
  discounts in force at `event.created`, those whose coupon the payload embeds; a
  customer-level discount is not in the event). When a tiered price comes without its
  tiers (webhooks never expand them) the MRR is unknown and the licensed quantity's
  direction decides instead (`before`/`after` then carry `licensed_quantity`, no `mrr`);
- `subscription_interval_changed`: the primary item's interval or `interval_count`
  changed (a monthly plan made yearly, whatever the MRR);
- `subscription_cancel_scheduled`: `cancel_at_period_end` false -> true, or `cancel_at`
  set, on a subscription not yet canceled;
- `subscription_reactivated`: `cancel_at_period_end` true -> false or `cancel_at`
  cleared (not canceled), or a status move from canceled to active/trialing (from paused:
  `subscription_resumed`);
- `trial_will_end`: `customer.subscription.trial_will_end` (a notice: `before` holds
  the trial, `after` the plan it turns into);
- `subscription_paused` / `subscription_resumed`: `pause_collection` set / cleared, or
  the status moving to / from `paused` (one event when both change at once);
- `payment_recovered`: `invoice.paid` with `attempt_count > 1`, or for an invoice the
  projection saw fail (`invoice.payment_failed`);
- `trial_converted`: `invoice.paid` with `amount_paid > 0` for the first period after a
  trial: an invoice line's period starts at, or the invoice's look-back period ends at,
  the `trial_end` of its subscription in the projection. Stripe sends `invoice.paid` once
  per invoice, and only the invoice after the trial starts there.

Exactly once: each semantic event is one action of its own workflow, so its Customer.io
event id is the deterministic ULID of (Stripe event id, workflow id, action index); a
duplicate webhook creates no delivery and a replay resends the same id.
"""

from __future__ import annotations

from typing import Any

from billbridge.billing.discounts import discount_summaries, subscription_mrr
from billbridge.billing.values import as_bool, as_int, is_metered, item_summaries, primary_item
from billbridge.store.pending import BillingReads
from billbridge.stripe.events import (
    current_period_end_of,
    current_period_start_of,
    object_of,
    previous_attributes_of,
    subscription_id_of_invoice,
)

SEMANTIC_EVENTS: tuple[str, ...] = (
    "subscription_upgraded",
    "subscription_downgraded",
    "subscription_interval_changed",
    "subscription_cancel_scheduled",
    "subscription_reactivated",
    "subscription_paused",
    "subscription_resumed",
    "trial_will_end",
    "trial_converted",
    "payment_recovered",
)
_PLAN_KEYS = ("items", "plan", "quantity", "discount", "discounts")
_PAUSE_KEYS = ("pause_collection", "status")
_RESUMED_FROM = frozenset({"canceled"})  # paused -> active is subscription_resumed
_RESUMED_TO = frozenset({"active", "trialing"})


def plan_values(subscription: dict[str, Any], at: int = 0) -> dict[str, Any]:
    """MRR (its own discounts in force at `at`) and the primary item's price, product,
    interval (and `interval_count`), amount and quantity."""
    items = item_summaries(subscription)
    item = primary_item(items) or {}
    period = (current_period_start_of(subscription), current_period_end_of(subscription))
    projected = {
        "items": items,
        "currency": subscription.get("currency"),
        "discounts": discount_summaries(subscription, period),
    }
    # A tiered price whose tiers the webhook left out (Stripe expands them only on request)
    # has no known MRR here: the licensed quantity tells the direction instead.
    unknown = any(
        i.get("tiers_mode") is not None and not isinstance(i.get("tiers"), list)
        for i in items
        if not is_metered(i)
    )
    values = {
        "mrr": None if unknown else subscription_mrr(projected, [], now=at),
        "licensed_quantity": (
            sum(as_int(i.get("quantity")) or 0 for i in items if not is_metered(i))
            if unknown
            else None
        ),
        "price_id": item.get("price_id"),
        "product_id": item.get("product_id"),
        "interval": item.get("interval"),
        "interval_count": item.get("interval_count"),
        "amount": item.get("unit_amount"),
        "quantity": item.get("quantity"),
    }
    return {key: value for key, value in values.items() if value is not None}


def _cancel_values(subscription: dict[str, Any]) -> dict[str, Any]:
    values = {
        "status": subscription.get("status"),
        "cancel_at_period_end": as_bool(subscription.get("cancel_at_period_end")),
        "cancel_at": as_int(subscription.get("cancel_at")),
    }
    return {key: value for key, value in values.items() if value is not None}


def _plan_changes(before: dict[str, Any], after: dict[str, Any], at: int) -> dict[str, Any]:
    plan_before, plan_after = plan_values(before, at), plan_values(after, at)
    change = {"before": plan_before, "after": plan_after}
    changes: dict[str, Any] = {}
    interval_changed = any(
        plan_before.get(key) != plan_after.get(key) for key in ("interval", "interval_count")
    ) and all(plan.get("interval") for plan in (plan_before, plan_after))
    if interval_changed:
        changes["subscription_interval_changed"] = change
    measure = "mrr" if "mrr" in plan_before and "mrr" in plan_after else "licensed_quantity"
    mrr_before, mrr_after = plan_before.get(measure) or 0, plan_after.get(measure) or 0
    plan_changed = any(
        plan_before.get(key) != plan_after.get(key) for key in ("price_id", "product_id")
    )
    if mrr_before != mrr_after or (plan_changed and not interval_changed):
        name = "subscription_downgraded" if mrr_after < mrr_before else "subscription_upgraded"
        changes[name] = change
    return changes


def _paused(subscription: dict[str, Any]) -> bool:
    return subscription.get("status") == "paused" or isinstance(
        subscription.get("pause_collection"), dict
    )


def _pause_values(subscription: dict[str, Any]) -> dict[str, Any]:
    pause = subscription.get("pause_collection")
    values = {
        "status": subscription.get("status"),
        "pause_behavior": pause.get("behavior") if isinstance(pause, dict) else None,
        "resumes_at": as_int(pause.get("resumes_at")) if isinstance(pause, dict) else None,
    }
    return {key: value for key, value in values.items() if value is not None}


def _subscription_changes(event: dict[str, Any]) -> dict[str, Any]:
    after = object_of(event)
    previous = previous_attributes_of(event)
    before = {**after, **previous}
    changes: dict[str, Any] = {}
    if any(key in previous for key in _PLAN_KEYS):
        changes.update(_plan_changes(before, after, as_int(event.get("created")) or 0))
    if any(key in previous for key in _PAUSE_KEYS) and _paused(before) != _paused(after):
        name = "subscription_paused" if _paused(after) else "subscription_resumed"
        changes[name] = {"before": _pause_values(before), "after": _pause_values(after)}
    status = after.get("status")
    if status != "canceled":
        was_scheduled = before.get("cancel_at_period_end") is True or bool(before.get("cancel_at"))
        is_scheduled = after.get("cancel_at_period_end") is True or bool(after.get("cancel_at"))
        touched = "cancel_at_period_end" in previous or "cancel_at" in previous
        if touched and is_scheduled and not was_scheduled:
            changes["subscription_cancel_scheduled"] = {
                "before": _cancel_values(before),
                "after": _cancel_values(after),
            }
        elif touched and was_scheduled and not is_scheduled:
            changes["subscription_reactivated"] = {
                "before": _cancel_values(before),
                "after": _cancel_values(after),
            }
    if (
        "subscription_reactivated" not in changes
        and previous.get("status") in _RESUMED_FROM
        and status in _RESUMED_TO
    ):
        changes["subscription_reactivated"] = {
            "before": _cancel_values(before),
            "after": _cancel_values(after),
        }
    return changes


def _trial_changes(event: dict[str, Any]) -> dict[str, Any]:
    subscription = object_of(event)
    trial_end = as_int(subscription.get("trial_end"))
    if trial_end is None:
        return {}
    before = {"status": subscription.get("status"), "trial_end": trial_end}
    after = {"trial_end": trial_end, **plan_values(subscription, as_int(event.get("created")) or 0)}
    return {"trial_will_end": {"before": before, "after": after}}


def _invoice_changes(event: dict[str, Any], store: BillingReads | None) -> dict[str, Any]:
    invoice = object_of(event)
    attempts = as_int(invoice.get("attempt_count")) or 0
    failed_before = attempts > 1
    invoice_id = invoice.get("id")
    if not failed_before and store is not None and isinstance(invoice_id, str):
        stored = store.get_billing_object("invoice", invoice_id)
        failed_before = bool(stored and stored.get("payment_failed"))
    if not failed_before or invoice.get("status") not in (None, "paid"):
        return {}
    after = {
        "status": "paid",
        "amount_paid": as_int(invoice.get("amount_paid")),
        "attempt_count": attempts or None,
    }
    return {
        "payment_recovered": {
            "before": {"status": "payment_failed"},
            "after": {key: value for key, value in after.items() if value is not None},
        }
    }


def _line_period_starts(invoice: dict[str, Any]) -> set[int]:
    lines = invoice.get("lines")
    data = lines.get("data") if isinstance(lines, dict) else None
    starts: set[int] = set()
    for line in data if isinstance(data, list) else []:
        period = line.get("period") if isinstance(line, dict) else None
        start = as_int(period.get("start")) if isinstance(period, dict) else None
        if start is not None:
            starts.add(start)
    return starts


def _trial_converted(event: dict[str, Any], store: BillingReads | None) -> dict[str, Any]:
    invoice = object_of(event)
    paid = as_int(invoice.get("amount_paid")) or 0
    subscription_id = subscription_id_of_invoice(invoice)
    if store is None or paid <= 0 or subscription_id is None:
        return {}
    if invoice.get("status") not in (None, "paid"):
        return {}
    subscription = store.get_billing_object("subscription", subscription_id)
    trial_end = as_int(subscription.get("trial_end")) if subscription else None
    if trial_end is None:
        return {}
    starts_after_trial = trial_end in _line_period_starts(invoice) or (
        as_int(invoice.get("period_end")) == trial_end
        and invoice.get("billing_reason") == "subscription_cycle"
    )
    if not starts_after_trial:
        return {}
    after = {
        "status": "active",
        "subscription": subscription_id,
        "amount_paid": paid,
        "currency": invoice.get("currency"),
    }
    return {
        "trial_converted": {
            "before": {"status": "trialing", "trial_end": trial_end},
            "after": {key: value for key, value in after.items() if value is not None},
        }
    }


def derive_changes(event: dict[str, Any], store: BillingReads | None = None) -> dict[str, Any]:
    """The semantic events this Stripe event means (see the module docstring), by name."""
    event_type = event.get("type")
    if event_type == "customer.subscription.updated":
        return _subscription_changes(event)
    if event_type == "customer.subscription.trial_will_end":
        return _trial_changes(event)
    if event_type == "invoice.paid":
        return {**_invoice_changes(event, store), **_trial_converted(event, store)}
    if event_type == "invoice.payment_succeeded":
        return _invoice_changes(event, store)
    return {}


# Read from the event alone; the others also need the projection.
PAYLOAD_ONLY_CHANGES = frozenset(SEMANTIC_EVENTS) - {"payment_recovered", "trial_converted"}


def payload_only_change_filter(workflow_filter: str | None) -> str | None:
    """The change name when a workflow's whole filter is `changes.<name>` for a change that
    `derive_changes(event)` can decide without the store (so ingest can), else None."""
    if workflow_filter is None:
        return None
    text = workflow_filter.strip()
    if text.startswith("{{") and text.endswith("}}"):
        text = text[2:-2].strip()
    prefix = "changes."
    if not text.startswith(prefix):
        return None
    name = text[len(prefix) :]
    return name if name in PAYLOAD_ONLY_CHANGES else None
