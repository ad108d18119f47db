"""PostgreSQL wake-ups: committed work is announced with NOTIFY after the commit, a burst
of batches costs a few notifications (one per NOTIFY_INTERVAL at most), and an ingest that
makes nothing due announces nothing."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from billbridge.store import PostgresStore
from billbridge.store.postgres import CHANNEL, NOTIFY_INTERVAL
from billbridge.store.records import NewDelivery
from tests.support.store_events import event

pytestmark = pytest.mark.postgres


def _listener(url: str) -> psycopg.Connection[tuple[object, ...]]:
    conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
    conn.execute(f"LISTEN {CHANNEL}")
    return conn


def _received(conn: psycopg.Connection[tuple[object, ...]], quiet: float) -> int:
    """Notifications that arrive until none has for `quiet` seconds."""
    count = 0
    while True:
        arrived = sum(1 for _ in conn.notifies(timeout=quiet, stop_after=1))
        if not arrived:
            return count
        count += arrived


def test_a_burst_of_ingests_is_announced_by_a_few_notifications(
    migrated_postgres_url: str,
) -> None:
    """64 ingests from 16 callers commit in many batches; other processes hear of them
    through at most one NOTIFY per interval (and at least one)."""
    listener = _listener(migrated_postgres_url)
    store = PostgresStore(migrated_postgres_url)
    try:
        start = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            results = list(
                pool.map(
                    lambda n: store.ingest(event(f"notify_burst_{n}"), [NewDelivery("wf", 0, "x")]),
                    range(64),
                )
            )
        assert all(result.inserted for result in results)
    finally:
        store.close()  # sends what is still owed
    elapsed = time.monotonic() - start
    try:
        heard = _received(listener, quiet=1.0)
    finally:
        listener.close()
    print(f"\n64 ingests in {elapsed:.2f} s: {heard} notifications")
    assert heard >= 1
    assert heard <= elapsed / NOTIFY_INTERVAL + 2
    assert heard < 64


def test_an_ingest_that_makes_nothing_due_announces_nothing(migrated_postgres_url: str) -> None:
    """A duplicate event, or one whose deliveries are all decided already, wakes nobody."""
    store = PostgresStore(migrated_postgres_url)
    try:
        store.ingest(event("notify_quiet"), [NewDelivery("wf", 0, "x")])
        listener = _listener(migrated_postgres_url)
        try:
            _received(listener, quiet=0.3)  # anything the first ingest announced
            assert not store.ingest(event("notify_quiet"), [NewDelivery("wf", 0, "x")]).inserted
            skipped = NewDelivery("wf", 0, "x", status="skipped", reason="filter did not match")
            assert store.ingest(event("notify_quiet_skipped"), [skipped]).inserted
            assert _received(listener, quiet=3 * NOTIFY_INTERVAL + 0.3) == 0
            store.notify_work()  # while a notification that is owed does go out
            assert _received(listener, quiet=1.0) == 1
        finally:
            listener.close()
    finally:
        store.close()
