"""The billing projection on both databases: the ordering guard, sticky flags, late customer
links, ingest in one transaction, and any arrival order giving the in-order profile."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billbridge.billing.profile import compute_profile
from billbridge.billing.projection import rows_for_event, rows_for_object
from billbridge.store import open_store
from billbridge.store.base import Store
from billbridge.store.records import CustomerRecord
from billbridge.stripe.events import new_event_from

MONTH = {"interval": "month", "interval_count": 1}


def _uid(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def _subscription(
    sub_id: str, customer: str, *, status: str = "active", price: int = 2900, **extra: Any
) -> dict[str, Any]:
    return {
        "object": "subscription",
        "id": sub_id,
        "customer": customer,
        "status": status,
        "currency": "usd",
        "created": 1_000,
        "cancel_at_period_end": False,
        "cancel_at": None,
        "canceled_at": None,
        "ended_at": None,
        "trial_end": None,
        "livemode": False,
        "items": {
            "data": [
                {
                    "price": {
                        "id": f"price_{price}",
                        "product": "prod_1",
                        "unit_amount": price,
                        "recurring": MONTH,
                    },
                    "quantity": 1,
                    "current_period_end": 5_000,
                }
            ]
        },
        **extra,
    }


def _charge(charge_id: str, customer: str, **extra: Any) -> dict[str, Any]:
    return {
        "object": "charge",
        "id": charge_id,
        "customer": customer,
        "status": "succeeded",
        "paid": True,
        "amount": 5000,
        "amount_captured": 5000,
        "amount_refunded": 0,
        "refunded": False,
        "currency": "usd",
        "created": 2_000,
        "livemode": False,
        **extra,
    }


def _event(event_type: str, obj: dict[str, Any], created: int) -> dict[str, Any]:
    return {
        "id": _uid("evt_"),
        "object": "event",
        "type": event_type,
        "created": created,
        "livemode": False,
        "data": {"object": copy.deepcopy(obj)},
    }


def apply_object(store: Store, obj: dict[str, Any], *, watermark: int) -> bool:
    """Apply one object snapshot taken at `watermark`, as backfill's API reads do."""
    return store.apply_billing(rows_for_object(obj, watermark=watermark))


def apply_event(store: Store, event: dict[str, Any]) -> bool:
    """Apply an event's objects outside ingest (ingest applies them in its transaction)."""
    return store.apply_billing(rows_for_event(event))


# Store conformance (both drivers) ---------------------------------------------------------


def test_an_older_snapshot_never_overwrites_a_newer_one(store: Store) -> None:
    """Applying t=200 then t=100 keeps t=200; the reverse order ends the same."""
    cus, sub = _uid("cus_"), _uid("sub_")
    newer = _subscription(sub, cus, status="past_due")
    older = _subscription(sub, cus, status="active")
    assert apply_object(store, newer, watermark=200)
    assert not apply_object(store, older, watermark=100)
    assert not apply_object(store, newer, watermark=200)  # the same snapshot again
    assert compute_profile(store, cus)["subscription_status"] == "past_due"


def test_a_late_update_does_not_undo_a_cancellation(store: Store) -> None:
    """subscription.updated (active) arriving after subscription.deleted leaves it canceled,
    even with a later created."""
    cus, sub = _uid("cus_"), _uid("sub_")
    canceled = _subscription(sub, cus, status="canceled", canceled_at=300, ended_at=300)
    assert apply_event(store, _event("customer.subscription.deleted", canceled, 300))
    late = _event("customer.subscription.updated", _subscription(sub, cus), 301)
    assert not apply_event(store, late)
    profile = compute_profile(store, cus)
    assert profile["subscription_status"] == "canceled"
    assert profile["canceled_at"] == 300
    assert profile["mrr"] == 0


def test_sticky_flags_and_late_customer_links(store: Store) -> None:
    """An invoice that once failed stays marked; a dispute learns its customer later and a
    refund counts through its charge."""
    cus, inv, ch = _uid("cus_"), _uid("in_"), _uid("ch_")
    invoice = {"object": "invoice", "id": inv, "customer": cus, "status": "open"}
    apply_event(store, _event("invoice.payment_failed", invoice, 100))
    apply_event(store, _event("invoice.paid", {**invoice, "status": "paid"}, 200))
    stored = store.get_billing_object("invoice", inv)
    assert stored is not None
    assert stored["status"] == "paid"
    assert stored["payment_failed"] is True

    apply_object(store, _charge(ch, cus), watermark=100)
    dispute = {"object": "dispute", "id": _uid("dp_"), "charge": ch, "status": "needs_response"}
    apply_object(store, dispute, watermark=150)
    refund = {"object": "refund", "id": _uid("re_"), "charge": ch, "status": "succeeded"}
    apply_object(store, {**refund, "amount": 1500, "currency": "usd"}, watermark=160)
    profile = compute_profile(store, cus)
    assert profile["disputes_count"] == 1  # linked through its charge
    assert profile["total_spent"] == 3500

    other = _uid("dp_")
    apply_object(store, {"object": "dispute", "id": other, "status": "needs_response"}, watermark=1)
    rows = rows_for_event(_event("charge.dispute.created", {"object": "dispute", "id": other}, 1))
    assert store.apply_billing([dataclasses.replace(row, customer_id=cus) for row in rows])
    assert compute_profile(store, cus)["disputes_count"] == 2


def test_ingest_applies_the_projection_once_in_the_same_transaction(store: Store) -> None:
    """A new event's rows are applied with it; a duplicate changes nothing."""
    cus, sub = _uid("cus_"), _uid("sub_")
    event = _event("customer.subscription.created", _subscription(sub, cus), 100)
    raw = "{}"
    result = store.ingest(new_event_from(event, raw), [], billing=rows_for_event(event))
    assert result.inserted
    assert compute_profile(store, cus)["subscription_id"] == sub
    # A duplicate event id (here carrying a newer snapshot) is ignored entirely.
    newer = copy.deepcopy(event)
    newer["data"]["object"]["status"] = "past_due"
    newer["created"] = 200
    again = store.ingest(new_event_from(newer, raw), [], billing=rows_for_event(newer))
    assert not again.inserted
    assert compute_profile(store, cus)["subscription_status"] == "active"


def test_the_full_profile_from_a_story(store: Store) -> None:
    """Customer, subscription, charges, refunds and a dispute give every SPEC attribute."""
    cus, sub = _uid("cus_"), _uid("sub_")
    customer = {
        "object": "customer",
        "id": cus,
        "email": "story@example.com",
        "name": "Story",
        "created": 900,
        "currency": "usd",
        "delinquent": False,
    }
    apply_event(store, _event("customer.created", customer, 900))
    apply_event(store, _event("customer.subscription.created", _subscription(sub, cus), 1_000))
    ch1, ch2, ch3 = _uid("ch_"), _uid("ch_"), _uid("ch_")
    apply_event(store, _event("charge.succeeded", _charge(ch1, cus, created=1_100), 1_100))
    apply_event(store, _event("charge.succeeded", _charge(ch2, cus, created=1_200), 1_200))
    apply_event(store, _event("charge.failed", _charge(ch3, cus, status="failed"), 1_300))
    refunded = _charge(ch2, cus, created=1_200, amount_refunded=2000)
    apply_event(store, _event("charge.refunded", refunded, 1_400))
    dispute = {"object": "dispute", "id": _uid("dp_"), "charge": ch1, "status": "needs_response"}
    apply_event(store, _event("charge.dispute.created", dispute, 1_500))
    assert compute_profile(store, cus) == {
        "email": "story@example.com",
        "name": "Story",
        "stripe_customer_id": cus,
        "created_at": 900,
        "subscription_id": sub,
        "subscription_status": "active",
        "plan_price_id": "price_2900",
        "plan_product_id": "prod_1",
        "plan_interval": "month",
        "plan_amount": 2900,
        "mrr": 2900,
        "metered_items_count": 0,
        "currency": "usd",
        "current_period_end": 5_000,
        "cancel_at_period_end": False,
        "delinquent": False,
        "total_spent": 8000,
        "payments_count": 2,
        "first_payment_at": 1_100,
        "last_payment_at": 1_200,
        "failed_payments_count": 1,
        "last_payment_failed_at": 2_000,
        "disputes_count": 1,
    }


def test_customer_snapshots_read_many_customers_as_one_by_one_reads_would(store: Store) -> None:
    """The worker's batch read answers exactly what get_customer and billing_state answer,
    including refunds and disputes linked only through a charge, and an unknown id."""
    first, second, unknown = _uid("cus_"), _uid("cus_"), _uid("cus_")
    customer = {"object": "customer", "id": first, "email": "a@example.com", "created": 5}
    apply_event(store, _event("customer.created", customer, 10))
    store.upsert_customer(CustomerRecord(first, "a@example.com", None, 5, {"plan": "x"}))
    for cus in (first, second):
        apply_event(
            store, _event("customer.subscription.created", _subscription(_uid("sub_"), cus), 20)
        )
        charges = [_uid("ch_"), _uid("ch_")]
        for created, charge in enumerate(charges, start=30):
            apply_event(store, _event("charge.succeeded", _charge(charge, cus), created))
        dispute = {"object": "dispute", "id": _uid("dp_"), "charge": charges[0], "status": "lost"}
        apply_event(store, _event("charge.dispute.created", dispute, 40))
        refund = {"object": "refund", "id": _uid("re_"), "charge": charges[1], "amount": 100}
        apply_object(store, {**refund, "currency": "usd", "status": "succeeded"}, watermark=50)
        invoice = {"object": "invoice", "id": _uid("in_"), "customer": cus, "status": "paid"}
        apply_event(store, _event("invoice.paid", invoice, 60))

    snapshots = store.customer_snapshots([first, second, unknown, first])
    assert set(snapshots) == {first, second, unknown}
    for cus in (first, second, unknown):
        assert snapshots[cus].record == store.get_customer(cus)
        assert snapshots[cus].state == store.billing_state(cus)
    assert snapshots[first].record is not None
    assert snapshots[unknown].record is None
    assert len(snapshots[second].state.disputes) == 1
    assert len(snapshots[second].state.refunds) == 1
    assert len(snapshots[second].state.charges) == 2
    assert store.customer_snapshots([]) == {}


# Any arrival order gives the in-order result (SQLite, hypothesis) ---------------------------


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """One migrated SQLite store for the property tests (each example uses fresh ids)."""
    path: Path = tmp_path_factory.mktemp("perm") / "perm.db"
    opened = open_store(f"sqlite:///{path}")
    opened.migrate()
    try:
        yield opened
    finally:
        opened.close()


def _renamed(events: list[dict[str, Any]], mapping: dict[str, str]) -> list[dict[str, Any]]:
    """The same story with fresh object ids, so examples never share rows."""
    text = json.dumps(events)
    for old, new in mapping.items():
        text = text.replace(old, new)
    renamed: list[dict[str, Any]] = json.loads(text)
    return renamed


def _subscription_story(ties: list[int]) -> list[dict[str, Any]]:
    """created, updated x3 (plan change, cancel scheduled, price up), deleted; `ties` are the
    created offsets (equal values make ties)."""
    cus, sub = "cus_PERM", "sub_PERM"
    snapshots = [
        ("customer.subscription.created", _subscription(sub, cus, status="trialing", price=900)),
        ("customer.subscription.updated", _subscription(sub, cus, price=900)),
        ("customer.subscription.updated", _subscription(sub, cus, price=2900)),
        (
            "customer.subscription.updated",
            _subscription(sub, cus, price=2900, cancel_at_period_end=True),
        ),
        (
            "customer.subscription.deleted",
            _subscription(sub, cus, status="canceled", price=2900, canceled_at=9, ended_at=9),
        ),
    ]
    return [_event(kind, obj, 1_000 + t) for (kind, obj), t in zip(snapshots, ties, strict=True)]


def _charge_story(ties: list[int]) -> list[dict[str, Any]]:
    """succeeded, refunded partially, refunded fully, disputed (+ its charge.updated)."""
    cus, ch = "cus_PERM", "ch_PERM"
    full = _charge(ch, cus, amount_refunded=5000, refunded=True)
    snapshots = [
        ("charge.succeeded", _charge(ch, cus)),
        ("charge.refunded", _charge(ch, cus, amount_refunded=2000)),
        ("charge.refunded", full),
        (
            "charge.dispute.created",
            {"object": "dispute", "id": "dp_PERM", "charge": ch, "status": "needs_response"},
        ),
        ("charge.updated", {**full, "disputed": True}),
    ]
    return [_event(kind, obj, 2_000 + t) for (kind, obj), t in zip(snapshots, ties, strict=True)]


def _final_profile(store: Store, events: list[dict[str, Any]]) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:10]
    story = _renamed(events, {"_PERM": f"_P{suffix}"})
    for event in story:
        apply_event(store, event)
    profile = compute_profile(store, f"cus_P{suffix}")
    return {
        key: (value.replace(suffix, "") if isinstance(value, str) else value)
        for key, value in profile.items()
    }


# Offsets: strictly increasing (a clean history) or with ties in `created`.
_OFFSETS = st.lists(st.integers(min_value=0, max_value=2), min_size=5, max_size=5).map(
    lambda steps: list(itertools.accumulate(steps))
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(offsets=_OFFSETS, order=st.permutations(range(5)))
def test_any_order_of_a_subscription_lifecycle_gives_the_in_order_profile(
    sqlite_store: Store, offsets: list[int], order: list[int]
) -> None:
    """Every permutation of created, updated x3, deleted ends with the in-order attributes."""
    events = _subscription_story(offsets)
    in_order = _final_profile(sqlite_store, events)
    shuffled = _final_profile(sqlite_store, [events[i] for i in order])
    assert shuffled == in_order
    assert in_order["subscription_status"] == "canceled"


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(offsets=_OFFSETS, order=st.permutations(range(5)))
def test_any_order_of_a_charge_lifecycle_gives_the_in_order_profile(
    sqlite_store: Store, offsets: list[int], order: list[int]
) -> None:
    """Every permutation of succeeded, refunded partly, refunded fully, disputed (and the
    charge's update) ends with the in-order attributes."""
    events = _charge_story(offsets)
    in_order = _final_profile(sqlite_store, events)
    shuffled = _final_profile(sqlite_store, [events[i] for i in order])
    assert shuffled == in_order
    assert in_order["total_spent"] == 0
    assert in_order["payments_count"] == 1
    assert in_order["disputes_count"] == 1
