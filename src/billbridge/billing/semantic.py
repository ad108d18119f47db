"""Semantic events: what a Stripe change means, with before and after values.

    changes = derive_changes(event, store)   # {"subscription_upgraded": {...}, ...}

The template context exposes the result as `changes`; each semantic default workflow
filters on its name (`changes.subscription_upgraded`) and sends `before`/`after` in the
event data. Derived from the event itself (`data.previous_attributes`) and, for
`payment_recovered`, from the projection:

- `subscription_upgraded` / `subscription_downgraded`: a `customer.subscription.updated`
  whose items (or legacy plan/quantity) changed and whose MRR went up / down;
- `subscription_cancel_scheduled`: `cancel_at_period_end` false -> true, or `cancel_at`
  set, on a subscription not yet canceled;
- `subscription_reactivated`: `cancel_at_period_end` true -> false or `cancel_at`
  cleared (not canceled), or a status move from canceled/paused to active/trialing;
- `trial_will_end`: `customer.subscription.trial_will_end` (a notice: `before` holds
  the trial, `after` the plan it turns into);
- `payment_recovered`: `invoice.paid` with `attempt_count > 1`, or for an invoice the
  projection saw fail (`invoice.payment_failed`).

Exactly once: each semantic event is one action of its own workflow, so its Customer.io
event id is the deterministic ULID of (Stripe event id, workflow id, action index); a
duplicate webhook creates no delivery and a replay resends the same id.
"""

from __future__ import annotations

from typing import Any

from billbridge.billing.values import as_bool, as_int, item_summaries, mrr_of_items, primary_item
from billbridge.store.base import Store
from billbridge.stripe.events import object_of, previous_attributes_of

SEMANTIC_EVENTS: tuple[str, ...] = (
    "subscription_upgraded",
    "subscription_downgraded",
    "subscription_cancel_scheduled",
    "subscription_reactivated",
    "trial_will_end",
    "payment_recovered",
)
_PLAN_KEYS = ("items", "plan", "quantity")
_RESUMED_FROM = frozenset({"canceled", "paused"})
_RESUMED_TO = frozenset({"active", "trialing"})


def plan_values(subscription: dict[str, Any]) -> dict[str, Any]:
    """MRR and the primary item's price, product, interval, amount and quantity."""
    items = item_summaries(subscription)
    item = primary_item(items) or {}
    values = {
        "mrr": mrr_of_items(items),
        "price_id": item.get("price_id"),
        "product_id": item.get("product_id"),
        "interval": item.get("interval"),
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


def _subscription_changes(event: dict[str, Any]) -> dict[str, Any]:
    after = object_of(event)
    previous = previous_attributes_of(event)
    before = {**after, **previous}
    changes: dict[str, Any] = {}
    if any(key in previous for key in _PLAN_KEYS):
        plan_before, plan_after = plan_values(before), plan_values(after)
        mrr_before, mrr_after = plan_before.get("mrr"), plan_after.get("mrr")
        if isinstance(mrr_before, int) and isinstance(mrr_after, int) and mrr_before != mrr_after:
            name = "subscription_upgraded" if mrr_after > mrr_before else "subscription_downgraded"
            changes[name] = {"before": plan_before, "after": plan_after}
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
    after = {"trial_end": trial_end, **plan_values(subscription)}
    return {"trial_will_end": {"before": before, "after": after}}


def _invoice_changes(event: dict[str, Any], store: Store | None) -> dict[str, Any]:
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


def derive_changes(event: dict[str, Any], store: Store | None = None) -> dict[str, Any]:
    """The semantic events this Stripe event means (see the module docstring), by name."""
    event_type = event.get("type")
    if event_type == "customer.subscription.updated":
        return _subscription_changes(event)
    if event_type == "customer.subscription.trial_will_end":
        return _trial_changes(event)
    if event_type in ("invoice.paid", "invoice.payment_succeeded"):
        return _invoice_changes(event, store)
    return {}


# Read from the event alone; `payment_recovered` may also need the projection.
PAYLOAD_ONLY_CHANGES = frozenset(SEMANTIC_EVENTS) - {"payment_recovered"}


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
