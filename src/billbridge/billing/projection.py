"""Stripe object snapshots -> rows of the billing projection, under the ordering guard.

    store.ingest(..., billing=rows_for_event(event))      # webhook, reconcile: event.created
    store.apply_billing(rows_for_object(obj, watermark=ts))  # backfill: an API read at `ts`

Ingest applies the same rows (`rows_for_event`) inside the transaction that stores the
event, so the projection is never behind the stored events. Every write is guarded: a row
is replaced only by a snapshot whose order key (`billbridge.billing.ordering`) is greater,
so applying any set of snapshots in any order gives the same projection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from billbridge.billing.discounts import discount_summaries, pause_of
from billbridge.billing.ordering import order_key
from billbridge.billing.values import as_bool, as_int, as_text, item_summaries, mrr_of_items
from billbridge.store.records_billing import BillingRow, BillingState
from billbridge.stripe.events import (
    current_period_end_of,
    current_period_start_of,
    object_of,
    subscription_id_of_invoice,
)

# Event types whose object carries a fact its snapshot alone does not show.
_INVOICE_FAILED_EVENTS = frozenset({"invoice.payment_failed"})


def _customer_values(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "email": as_text(obj.get("email")),
        "name": as_text(obj.get("name")),
        "currency": as_text(obj.get("currency")),
        "delinquent": as_bool(obj.get("delinquent")),
        "discounts": discount_summaries(obj),
    }


def _subscription_values(obj: dict[str, Any]) -> dict[str, Any]:
    items = item_summaries(obj)
    period_end = current_period_end_of(obj)
    return {
        "status": as_text(obj.get("status")),
        "currency": as_text(obj.get("currency")),
        "current_period_end": period_end,
        "trial_end": as_int(obj.get("trial_end")),
        "cancel_at_period_end": as_bool(obj.get("cancel_at_period_end")),
        "cancel_at": as_int(obj.get("cancel_at")),
        "canceled_at": as_int(obj.get("canceled_at")),
        "ended_at": as_int(obj.get("ended_at")),
        "items": items,
        "mrr": mrr_of_items(items),  # before discounts (profile applies those at its time)
        "discounts": discount_summaries(obj, (current_period_start_of(obj), period_end)),
        "pause_collection": pause_of(obj),
    }


def _charge_values(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": as_text(obj.get("status")),
        "amount": as_int(obj.get("amount")),
        "amount_captured": as_int(obj.get("amount_captured")),
        "amount_refunded": as_int(obj.get("amount_refunded")),
        "currency": as_text(obj.get("currency")),
        "paid": as_bool(obj.get("paid")),
    }


def _refund_values(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "charge_id": _id(obj.get("charge")),
        "status": as_text(obj.get("status")),
        "amount": as_int(obj.get("amount")),
        "currency": as_text(obj.get("currency")),
    }


def _invoice_values(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "subscription_id": subscription_id_of_invoice(obj),
        "status": as_text(obj.get("status")),
        "amount_due": as_int(obj.get("amount_due")),
        "amount_paid": as_int(obj.get("amount_paid")),
        "currency": as_text(obj.get("currency")),
        "attempt_count": as_int(obj.get("attempt_count")),
    }


def _dispute_values(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "charge_id": _id(obj.get("charge")),
        "status": as_text(obj.get("status")),
        "amount": as_int(obj.get("amount")),
        "currency": as_text(obj.get("currency")),
    }


_VALUES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "customer": _customer_values,
    "subscription": _subscription_values,
    "charge": _charge_values,
    "refund": _refund_values,
    "invoice": _invoice_values,
    "dispute": _dispute_values,
}


def _id(value: Any) -> str | None:
    if isinstance(value, dict):
        return as_text(value.get("id"))
    return as_text(value)


def _customer_of(kind: str, obj: dict[str, Any]) -> str | None:
    if kind == "customer":
        return _id(obj.get("id"))
    customer = _id(obj.get("customer"))
    if customer is None and isinstance(obj.get("charge"), dict):  # an expanded charge
        customer = _id(obj["charge"].get("customer"))
    return customer


def row_for_object(
    obj: dict[str, Any],
    *,
    watermark: int,
    account: str | None = None,
    event_type: str | None = None,
    customer_id: str | None = None,
) -> BillingRow | None:
    """The projection row of one Stripe object snapshot, or None for a kind not projected."""
    kind = as_text(obj.get("object"))
    stripe_id = _id(obj.get("id"))
    if kind not in _VALUES or stripe_id is None:
        return None
    values = _VALUES[kind](obj)
    sticky: list[str] = []
    if kind == "customer" and (obj.get("deleted") is True or event_type == "customer.deleted"):
        sticky.append("deleted")
    if kind == "invoice" and (
        event_type in _INVOICE_FAILED_EVENTS or (as_int(obj.get("attempt_count")) or 0) > 1
    ):
        # A second attempt means an earlier one failed: either tells of a failure.
        sticky.append("payment_failed")
    if kind == "customer" and "deleted" in sticky and obj.get("deleted") is True:
        # The API's deleted stub carries no fields: keep what was known before.
        values = {}
    created = as_int(obj.get("created"))
    owner = _customer_of(kind, obj) or customer_id
    livemode = obj.get("livemode")
    return BillingRow(
        kind=kind,
        stripe_id=stripe_id,
        customer_id=owner,
        account=account,
        livemode=livemode if isinstance(livemode, bool) else None,
        created=created,
        watermark=watermark,
        order_key=order_key(kind, values, watermark, sticky=tuple(sticky), created=created),
        values=values,
        sticky=tuple(sticky),
    )


def rows_for_object(
    obj: dict[str, Any],
    *,
    watermark: int,
    account: str | None = None,
    event_type: str | None = None,
    customer_id: str | None = None,
) -> list[BillingRow]:
    """The object's row plus those of the projected objects it embeds (a charge's refunds)."""
    row = row_for_object(
        obj, watermark=watermark, account=account, event_type=event_type, customer_id=customer_id
    )
    if row is None:
        return []
    rows = [row]
    if row.kind == "charge":
        refunds = obj.get("refunds")
        data = refunds.get("data") if isinstance(refunds, dict) else None
        for refund in data if isinstance(data, list) else []:
            if isinstance(refund, dict):
                embedded = row_for_object(
                    {"object": "refund", **refund},
                    watermark=watermark,
                    account=account,
                    customer_id=row.customer_id,
                )
                if embedded is not None:
                    rows.append(embedded)
    return rows


def rows_for_event(event: dict[str, Any]) -> list[BillingRow]:
    """The projection rows a Stripe event implies (none for kinds not projected)."""
    created = event.get("created")
    if not isinstance(created, int) or isinstance(created, bool):
        return []
    return rows_for_object(
        object_of(event),
        watermark=created,
        account=as_text(event.get("account")),
        event_type=as_text(event.get("type")),
    )


def link_rows(event: dict[str, Any], customer_id: str) -> list[BillingRow]:
    """The rows recording the customer found for an object whose payload had none (a
    dispute, whose charge names the customer); applied, a row that already has a
    customer keeps it. Empty when there is nothing to link."""
    obj = object_of(event)
    if _customer_of(as_text(obj.get("object")) or "", obj) is not None:
        return []
    created = event.get("created")
    if not isinstance(created, int) or isinstance(created, bool):
        return []
    return rows_for_object(
        obj,
        watermark=created,
        account=as_text(event.get("account")),
        event_type=as_text(event.get("type")),
        customer_id=customer_id,
    )


def state_of_objects(objects: list[dict[str, Any]], *, watermark: int = 0) -> BillingState:
    """A customer's projection built in memory from object snapshots (newest per id wins,
    by the same order keys): for previews and tests that have no store."""
    newest: dict[tuple[str, str], BillingRow] = {}
    for obj in objects:
        for row in rows_for_object(obj, watermark=watermark):
            key = (row.kind, row.stripe_id)
            if key not in newest or newest[key].order_key < row.order_key:
                newest[key] = row
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for row in newest.values():
        record = {
            "id": row.stripe_id,
            "customer_id": row.customer_id,
            "created": row.created,
            "payment_failed": "payment_failed" in row.sticky,
            "deleted": "deleted" in row.sticky,
            **row.values,
        }
        by_kind.setdefault(row.kind, []).append(record)
    customers = by_kind.get("customer", [])
    return BillingState(
        customer=customers[0] if customers else None,
        subscriptions=tuple(by_kind.get("subscription", [])),
        charges=tuple(by_kind.get("charge", [])),
        refunds=tuple(by_kind.get("refund", [])),
        invoices=tuple(by_kind.get("invoice", [])),
        disputes=tuple(by_kind.get("dispute", [])),
    )
