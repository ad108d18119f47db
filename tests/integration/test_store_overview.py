"""Conformance of the store's overview reads (hourly volume, email filter) on both drivers."""

from __future__ import annotations

import itertools

import sqlalchemy as sa

from billbridge.store.base import Store
from billbridge.store.queries import HOUR
from billbridge.store.records import EventFilter
from billbridge.store.tables import events
from tests.integration.test_store_conformance import actions, attempt, claim_all, event


def _age_event(store_url: str, stripe_event_id: str, seconds: float) -> None:
    """Move an event's received_at `seconds` into the past (as if received then)."""
    engine = sa.create_engine(store_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.update(events)
                .where(events.c.stripe_event_id == stripe_event_id)
                .values(received_at=events.c.received_at - seconds)
            )
    finally:
        engine.dispose()


def test_hourly_volume_is_empty_without_events(store: Store) -> None:
    """Every hour of the window is present, oldest first, with zero counts."""
    volume = store.hourly_volume(6)
    assert len(volume) == 6
    assert [v.events for v in volume] == [0] * 6
    assert all(b.hour_start - a.hour_start == HOUR for a, b in itertools.pairwise(volume))
    assert volume[-1].hour_start <= store.now() < volume[-1].hour_start + HOUR


def test_hourly_volume_buckets_events_and_delivery_outcomes(store: Store, store_url: str) -> None:
    """Events land in their hour; deliveries count as succeeded, failed or other."""
    store.ingest(event(1), actions(1))
    store.ingest(event(2), actions(3))
    store.ingest(event(3), [])
    claims = claim_all(store)
    first, second = claims[("evt_2", 0)], claims[("evt_2", 1)]
    store.complete(first.delivery_id, first.claim_id, "succeeded", attempt())
    store.complete(second.delivery_id, second.claim_id, "failed", attempt("terminal_error", 400))
    # ids grow in received order, so the oldest event is aged the most
    _age_event(store_url, "evt_1", 30 * HOUR)  # outside a 24-hour window
    _age_event(store_url, "evt_2", 2 * HOUR)
    volume = store.hourly_volume(24)
    assert len(volume) == 24
    assert sum(v.events for v in volume) == 2
    now = store.now()
    current = next(v for v in volume if v.hour_start == now - now % HOUR)
    assert (current.events, current.succeeded, current.failed, current.other) == (1, 0, 0, 0)
    aged = [v for v in volume if v.events and v is not current]
    assert len(aged) == 1
    assert (aged[0].succeeded, aged[0].failed, aged[0].other) == (1, 1, 1)
    assert aged[0].hour_start < current.hour_start
    assert sum(v.events for v in store.hourly_volume(48)) == 3


def test_list_events_filters_by_exact_email(store: Store) -> None:
    """The email filter matches the event's email only, not its customer id."""
    store.ingest(event(1, email="a@x.io"), [])
    store.ingest(event(2, email="b@x.io"), [])
    items, _ = store.list_events(EventFilter(email="b@x.io"))
    assert [item.stripe_event_id for item in items] == ["evt_2"]
    assert store.list_events(EventFilter(email="cus_1"))[0] == []
