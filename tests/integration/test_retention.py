"""Retention on both drivers: only old events whose deliveries are all final lose their
payload and bodies; event ids stay (duplicates are still refused); replay is refused."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from billbridge.config import load_settings
from billbridge.errors import ConfigurationError, EventPrunedError
from billbridge.observability import Metrics
from billbridge.retention import Retention
from billbridge.store.base import Store
from billbridge.store.records import AttemptRecord, NewDelivery
from billbridge.stripe.events import new_event_from
from billbridge.stripe.samples import sample_event

DAY = 86_400.0
EMAIL = "old.timer@example.com"


def _ingest(store: Store, customer_id: str) -> str:
    event = sample_event("charge.failed", customer_id=customer_id, email=EMAIL)
    raw = json.dumps(event)
    store.ingest(
        new_event_from(event, raw),
        [NewDelivery(workflow_id="wf", action_index=0, action_type="track_event")],
    )
    return str(event["id"])


def _finish_all(store: Store, failed: bool = False) -> None:
    for claim in store.claim_due("w", 100, 60):
        attempt = AttemptRecord(
            outcome="terminal_error" if failed else "succeeded",
            started_at=1.0,
            duration_ms=3.0,
            request={"api": "track", "path": f"/api/v1/customers/{EMAIL}/events"},
            response_status=400 if failed else 200,
            response_body='{"meta":{"error":"bad ' + EMAIL + '"}}',
            error=f"Customer.io 400: {EMAIL} is invalid" if failed else None,
        )
        status = "failed" if failed else "succeeded"
        store.complete(claim.delivery_id, claim.claim_id, status, attempt, error=attempt.error)


def _age(store_url: str, stripe_event_id: str, days: float) -> None:
    engine = sa.create_engine(store_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE events SET received_at = received_at - :s WHERE stripe_event_id = :i"
                ),
                {"s": days * DAY, "i": stripe_event_id},
            )
    finally:
        engine.dispose()


def _retention(store: Store, days: str = "30") -> Retention:
    settings = load_settings(BILLBRIDGE_RETENTION_DAYS=days, DATABASE_URL="sqlite://")
    return Retention(store, settings, Metrics())


def test_prunes_only_old_finished_events_and_keeps_their_ids(store: Store, store_url: str) -> None:
    """An old failed event is pruned (stub payload, no email, bodies cleared, the email
    redacted from errors); an old unfinished one and a recent one are untouched; the pruned
    id is still a duplicate; its replay is refused, bulk replay skips it; the metric counts."""
    old_done = _ingest(store, "cus_OldDone")
    _finish_all(store, failed=True)
    old_pending = _ingest(store, "cus_OldPending")
    recent = _ingest(store, "cus_Recent")
    for event_id in (old_done, old_pending):
        _age(store_url, event_id, 31)
    retention = _retention(store)

    report = retention.run_once()
    assert (report.ran, report.pruned) == (True, 1)
    assert retention.run_once().ran is False  # once per interval, across the fleet

    pruned = store.get_event(old_done)
    assert pruned is not None
    assert pruned.pruned_reason == "retention"
    assert json.loads(pruned.payload) == {
        "id": old_done,
        "object": "event",
        "type": "charge.failed",
        "created": pruned.summary.created,
        "livemode": False,
    }
    assert pruned.summary.email is None
    assert pruned.summary.customer_id == "cus_OldDone"
    [delivery] = pruned.deliveries
    [attempt] = delivery.attempts
    assert (attempt.request, attempt.response_body) == (None, None)
    assert attempt.response_status == 400
    assert attempt.error == "Customer.io 400: [removed] is invalid"
    assert delivery.last_error == "Customer.io 400: [removed] is invalid"

    for untouched in (old_pending, recent):
        detail = store.get_event(untouched)
        assert detail is not None
        assert detail.pruned_at is None
        assert EMAIL in detail.payload

    event = sample_event("charge.failed", event_id=old_done)
    assert store.ingest(new_event_from(event, json.dumps(event)), []).inserted is False
    with pytest.raises(EventPrunedError, match="retention"):
        store.replay_event(old_done)
    assert store.replay_failed() == []
    assert retention._metrics.retention_pruned._value.get() == 1


def test_retention_off_prunes_nothing(store: Store, store_url: str) -> None:
    """BILLBRIDGE_RETENTION_DAYS=off keeps every payload however old."""
    event_id = _ingest(store, "cus_Kept")
    _finish_all(store)
    _age(store_url, event_id, 400)
    assert _retention(store, "off").run_once().pruned == 0
    detail = store.get_event(event_id)
    assert detail is not None
    assert detail.pruned_at is None


def test_retention_below_the_floor_is_a_clear_error() -> None:
    """Fewer than 30 days is refused with the reason (dedup and reconcile need the ids)."""
    with pytest.raises(ConfigurationError, match="below the floor of 30"):
        load_settings(BILLBRIDGE_RETENTION_DAYS="7")
    assert load_settings(BILLBRIDGE_RETENTION_DAYS="0").retention_days == 0
    assert load_settings().retention_days == 90
