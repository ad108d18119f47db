"""Erasure's store statements on both drivers: who is found, what is skipped, what is kept."""

from __future__ import annotations

import hashlib
import json

from billbridge.config import load_settings
from billbridge.erasure import Eraser
from billbridge.observability import Metrics
from billbridge.store.base import Store
from billbridge.store.records import NewDelivery
from billbridge.store.sql_privacy import ERASED_SKIP
from billbridge.stripe.events import customer_record_from, new_event_from
from billbridge.stripe.samples import sample_event

EMAIL = "Carla.Gone@example.com"


def _ingest(store: Store, event_type: str, customer_id: str, email: str = EMAIL) -> str:
    event = sample_event(event_type, livemode=True, customer_id=customer_id, email=email)
    store.ingest(
        new_event_from(event, json.dumps(event)),
        [NewDelivery(workflow_id="wf", action_index=0, action_type="identify")],
        customer=customer_record_from(event),
    )
    return str(event["id"])


def test_erase_by_email_finds_the_customer_skips_unsent_deliveries_and_records_a_hash(
    store: Store,
) -> None:
    """An email (any case) finds its customer and that customer's other events; their
    pending deliveries are skipped; the customer row goes; the record holds the hash of
    the lower-cased email and counts; a second customer is untouched; the Customer.io
    delete is queued for the customer id, as a live event."""
    first = _ingest(store, "customer.created", "cus_Carla")
    second = _ingest(store, "invoice.paid", "cus_Carla")
    other = _ingest(store, "customer.created", "cus_Other", email="other@example.com")
    settings = load_settings(DATABASE_URL="sqlite://", BILLBRIDGE_IDENTIFIER="stripe_customer_id")
    eraser = Eraser(store, settings, Metrics())

    found = eraser.find(email=EMAIL.upper())
    assert found.customer_ids == {"cus_Carla"}
    assert found.events == 2

    report = eraser.erase(email=EMAIL.upper(), requested_by="tester")
    assert (report.customers, report.events) == (1, 2)
    for event_id in (first, second):
        detail = store.get_event(event_id)
        assert detail is not None
        assert detail.pruned_reason == "erasure"
        assert detail.summary.customer_id is None
        assert detail.summary.email is None
        assert [(d.status, d.last_error) for d in detail.deliveries] == [("skipped", ERASED_SKIP)]
    kept = store.get_event(other)
    assert kept is not None
    assert kept.pruned_at is None
    assert store.get_customer("cus_Carla") is None
    assert store.get_customer("cus_Other") is not None

    [record] = store.list_erasures()
    assert record.matched_hash == hashlib.sha256(EMAIL.lower().encode()).hexdigest()
    assert (record.matched_by, record.requested_by, record.cio_action) == (
        "email",
        "tester",
        "delete",
    )
    [queued] = record.cio_event_ids
    action = store.get_event(queued)
    assert action is not None
    assert action.summary.livemode is True
    assert json.loads(action.payload)["data"]["object"]["identifier"] == "cus_Carla"
    assert [(d.workflow_id, d.action_type) for d in action.deliveries] == [
        ("billbridge-erasure", "delete_person")
    ]
    assert eraser.find(customer_id="cus_Carla").events == 0  # nothing left to match
