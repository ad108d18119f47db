"""One conformance suite for the Store interface, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from billbridge.errors import ConfigurationError, StoreUnavailableError
from billbridge.store import PostgresStore, SqliteStore, open_store
from billbridge.store.base import Store
from billbridge.store.outbox import STICKY_COLUMNS, Db
from billbridge.store.records import (
    AttemptRecord,
    ClaimedDelivery,
    Completion,
    CustomerRecord,
    DeliveryStatus,
    EventFilter,
    NewDelivery,
    WorkerInfo,
)
from billbridge.store.records_billing import BillingRow
from billbridge.store.schema import metadata
from billbridge.store.sql import SqlStore
from billbridge.store.sqlite import require_sqlite
from billbridge.store.statements import DIALECTS, load
from billbridge.store.tables_billing import BILLING_TABLES
from tests.support.store_events import event

COMMON = {"id", "customer_id", "account", "livemode", "created", "watermark", "order_key"}

T = TypeVar("T")
DEADLINE = 10.0  # seconds any polled condition gets before the test fails


def actions(count: int, workflow: str = "wf") -> list[NewDelivery]:
    return [NewDelivery(workflow, i, "track_event") for i in range(count)]


def attempt(outcome: str = "succeeded", status: int | None = 200) -> AttemptRecord:
    return AttemptRecord(
        outcome=outcome,  # type: ignore[arg-type]
        started_at=time.time(),
        duration_ms=12.5,
        request={"method": "POST", "path": "/api/v2/entity"},
        response_status=status,
    )


def poll(fn: Callable[[], T | None], what: str) -> T:
    """Call `fn` until it returns something truthy, or fail after DEADLINE seconds."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def claim_all(store: Store, lease: float = 60.0) -> dict[tuple[str, int], ClaimedDelivery]:
    claims = store.claim_due("test", 1000, lease)
    return {(c.stripe_event_id, c.action_index): c for c in claims}


# Schema ----------------------------------------------------------------------------------


def test_migrated_schema_matches_tables(store_url: str) -> None:
    """Alembic's head revision produces exactly the tables.py schema (no autogenerate diff)."""
    engine = sa.create_engine(store_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_stored_bodies_are_compressed_with_lz4_on_postgresql(migrated_postgres_url: str) -> None:
    """Migration 0012 moves the big text columns to lz4 (this server is built with it), and
    a webhook-sized payload is stored compressed with it."""
    conninfo = migrated_postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(conninfo) as conn:
        methods = conn.execute(
            "SELECT attrelid::regclass::text || '.' || attname, attcompression FROM pg_attribute"
            " WHERE attcompression <> '' ORDER BY 1"
        ).fetchall()
        assert methods == [
            ("attempts.request", "l"),
            ("attempts.response_body", "l"),
            ("events.payload", "l"),
        ]
        payload = json.dumps({"id": "evt_lz4", "data": ["x" * 40] * 200})
        conn.execute(
            "INSERT INTO events (stripe_event_id, type, livemode, created, received_at,"
            " payload, source) VALUES ('evt_lz4', 't', false, 1, 1, %s, 'webhook')",
            (payload,),
        )
        stored = conn.execute(
            "SELECT pg_column_compression(payload) FROM events WHERE stripe_event_id = 'evt_lz4'"
        ).fetchone()
        conn.rollback()
    assert stored == ("lz4",)


def test_an_sqlite_older_than_the_statements_need_is_refused_clearly() -> None:
    """`INSERT ... RETURNING` came with SQLite 3.35: an older library is a configuration
    error naming both versions, not a syntax error at the first webhook."""
    require_sqlite((3, 35, 0))
    with pytest.raises(ConfigurationError, match=r"SQLite is 3\.34\.1; .* 3\.35\.0 or later"):
        require_sqlite((3, 34, 1))


def test_migrate_is_idempotent(store: Store) -> None:
    """Migrating an up-to-date database changes nothing and keeps the data."""
    store.set_meta("k", "v")
    store.migrate()
    assert store.get_meta("k") == "v"


def test_ping_and_database_clock(store: Store) -> None:
    """ping() answers True and now() is the database clock in Unix seconds."""
    assert store.ping() is True
    assert abs(store.now() - time.time()) < 5.0


# Ingest ----------------------------------------------------------------------------------


def test_ingest_stores_event_and_deliveries(store: Store) -> None:
    """An ingest stores the event and one due delivery per action with a deadline."""
    before = store.now()
    result = store.ingest(event(1), actions(2), retry_window=3600.0)
    assert result.inserted
    assert result.deliveries == 2
    detail = store.get_event("evt_1")
    assert detail is not None
    assert detail.summary.event_id == result.event_id
    assert detail.payload == '{"id": "evt_1"}'
    assert detail.api_version == "2024-06-20"
    assert [d.status for d in detail.deliveries] == ["pending", "pending"]
    claims = store.claim_due("w", 10, 60.0)
    assert {c.action_index for c in claims} == {0, 1}
    assert all(before + 3600.0 - 1 <= c.deadline_at <= store.now() + 3600.0 for c in claims)


def test_duplicate_event_changes_nothing(store: Store) -> None:
    """A second ingest of the same event id inserts nothing and names the existing row."""
    first = store.ingest(event(1), actions(1))
    second = store.ingest(event(1, type="charge.failed"), actions(3))
    assert not second.inserted
    assert second.event_id == first.event_id
    assert second.deliveries == 0
    detail = store.get_event("evt_1")
    assert detail is not None
    assert detail.summary.type == "customer.created"
    assert len(detail.deliveries) == 1


def test_concurrent_duplicates_insert_once(store: Store) -> None:
    """16 threads ingesting the same event at once: exactly one inserts, all agree on the id."""
    barrier = threading.Barrier(16)

    def ingest() -> tuple[bool, int]:
        barrier.wait()
        result = store.ingest(event("dup"), actions(2))
        return result.inserted, result.event_id

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: ingest(), range(16)))
    assert sum(inserted for inserted, _ in results) == 1
    assert len({event_id for _, event_id in results}) == 1
    assert len(store.claim_due("w", 100, 60.0)) == 2


def test_ingest_is_atomic(store: Store) -> None:
    """A failing ingest (two deliveries for one action) stores neither event nor deliveries."""
    clash = [NewDelivery("wf", 0, "identify"), NewDelivery("wf", 0, "identify")]
    customer = CustomerRecord("cus_x", "x@example.com", "X", 1, watermark=5)
    with pytest.raises(sa.exc.IntegrityError):
        store.ingest(event("bad"), clash, customer)
    assert store.get_event("evt_bad") is None
    assert store.get_customer("cus_x") is None
    assert store.claim_due("w", 10, 60.0) == []


def test_one_failing_ingest_does_not_sink_concurrent_ones(store: Store) -> None:
    """Among concurrent ingests one that fails gets its own error; all others are stored."""
    clash = [NewDelivery("wf", 0, "identify"), NewDelivery("wf", 0, "identify")]

    def ingest(n: int) -> str:
        try:
            store.ingest(event(n), clash if n == 13 else actions(1))
        except sa.exc.IntegrityError:
            return "failed"
        return "stored"

    with ThreadPoolExecutor(32) as pool:
        outcomes = list(pool.map(ingest, range(64)))
    assert outcomes.count("failed") == 1
    assert outcomes[13] == "failed"
    assert store.get_event("evt_13") is None
    assert store.stats().events_total == 63


def test_deliveries_decided_at_ingest_are_never_claimed(store: Store) -> None:
    """skipped/dry_run deliveries decided at ingest keep their reason and are not queued."""
    decided = [
        NewDelivery("wf", 0, "identify", status="skipped", reason="no person"),
        NewDelivery("wf", 1, "identify", status="dry_run", reason="test mode"),
    ]
    store.ingest(event(1), decided)
    assert store.claim_due("w", 10, 60.0) == []
    detail = store.get_event("evt_1")
    assert detail is not None
    assert [(d.status, d.last_error) for d in detail.deliveries] == [
        ("skipped", "no person"),
        ("dry_run", "test mode"),
    ]


# Customers -------------------------------------------------------------------------------


def test_customer_upsert_respects_watermark(store: Store) -> None:
    """A newer snapshot overwrites, an older one never does, an equal one does."""
    assert store.upsert_customer(CustomerRecord("cus_1", "a@x.io", "A", 10, {"k": 1}, watermark=5))
    assert store.upsert_customer(CustomerRecord("cus_1", "b@x.io", "B", 10, watermark=7))
    assert not store.upsert_customer(CustomerRecord("cus_1", "old@x.io", "Old", 10, watermark=6))
    stored = store.get_customer("cus_1")
    assert stored is not None
    assert (stored.email, stored.name, stored.watermark) == ("b@x.io", "B", 7)
    assert store.upsert_customer(
        CustomerRecord("cus_1", "c@x.io", None, 10, deleted=True, livemode=True, watermark=7)
    )
    stored = store.get_customer("cus_1")
    assert stored == CustomerRecord("cus_1", "c@x.io", None, 10, {}, True, True, 7)
    assert store.get_customer("cus_missing") is None


def test_ingest_upserts_the_customer(store: Store) -> None:
    """ingest() writes the customer snapshot in the same transaction, watermark applied."""
    store.upsert_customer(CustomerRecord("cus_1", "new@x.io", "New", 1, watermark=50))
    store.ingest(event(1), [], CustomerRecord("cus_1", "old@x.io", "Old", 1, watermark=40))
    store.ingest(
        event(2), [], CustomerRecord("cus_2", "two@x.io", "Two", 1, {"a": "b"}, watermark=1)
    )
    first, second = store.get_customer("cus_1"), store.get_customer("cus_2")
    assert first is not None
    assert first.email == "new@x.io"
    assert second is not None
    assert second.metadata == {"a": "b"}


# Claims, leases, fencing -----------------------------------------------------------------


def test_both_dialects_define_the_same_named_statements() -> None:
    """The SQLite and PostgreSQL statement modules define exactly the same names."""
    sqlite_names, postgres_names = (load(dialect).names() for dialect in DIALECTS)
    assert sqlite_names == postgres_names
    assert {"insert_events", "claim_due_ids", "finish_owned", "worker_beat"} <= sqlite_names


def _billing_rows(kind: str, customer: str | None, order_key: str) -> BillingRow:
    table = BILLING_TABLES[kind]
    own = [str(c.name) for c in table.c if c.name not in {*COMMON, "updated_at", *STICKY_COLUMNS}]
    stripe_id = "cus_1" if kind == "customer" else f"{kind}_1"
    return BillingRow(kind, stripe_id, customer, None, False, 1, 1, order_key, dict.fromkeys(own))


def test_every_named_statement_runs(store: Store) -> None:
    """No statement is built that never runs: ingest (customers, billing rows of every kind,
    a deleted customer's stub, sticky flags, customers learnt late, a redelivery), claims,
    finishes and heartbeats between them run every name the dialect defines."""
    assert isinstance(store, SqlStore)
    statements = store._statements
    statements.used.clear()
    billing = [_billing_rows(kind, None, "b") for kind in BILLING_TABLES]
    customer = CustomerRecord("cus_1", "a@x.io", "A", 1, watermark=1)
    stored = store.ingest(event(1), actions(2), customer, billing=billing)
    again = store.ingest(event(1), actions(2))  # a redelivery: its row id is read back
    assert (again.inserted, again.event_id, again.deliveries) == (False, stored.event_id, 0)
    late = [_billing_rows(kind, "cus_1", "a") for kind in BILLING_TABLES]
    stub = BillingRow("customer", "cus_1", "cus_1", None, None, None, 2, "c", {}, ("deleted",))
    failed = BillingRow(**{**vars(late[4]), "sticky": ("payment_failed",)})
    assert store.apply_billing([*late, stub, failed])
    assert (store.billing_state("cus_1").customer or {}).get("deleted") is True
    worker = WorkerInfo("w-1", "host", 1, "0")
    store.beat(worker, 0, 30.0)
    first, second = store.claim_due("w-1", 10, 60.0)
    assert store.finish_many(
        [Completion(first.delivery_id, first.claim_id, "succeeded", attempt())]
    )
    store.beat(WorkerInfo("w-2", "host", 2, "0"), 0, 0.0)  # w-1 is silent for over 0 s
    assert [w.worker_id for w in store.list_workers(60.0)] == ["w-2"]
    assert store.claim_due("w-2", 10, 60.0)[0].delivery_id == second.delivery_id
    assert statements.used == statements.names()


def test_claims_and_finishes_take_the_same_statements_whatever_the_batch_size(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claiming and recording 1 delivery or 60 runs the same statements, as many of each:
    a batch costs the database a fixed few round trips."""
    for n in range(31):
        store.ingest(event(n), actions(2))
    ran: list[str] = []
    execute = Db._execute

    def counted(db: Db, name: str, parameters: Sequence[object], rows: int = 1) -> object:
        ran.append(name)
        return execute(db, name, parameters, rows)

    monkeypatch.setattr(Db, "_execute", counted)
    statements: list[list[str]] = []
    for size in (1, 60):
        ran.clear()
        claims = store.claim_due("w", size, 60.0)
        assert len(claims) == size
        store.finish_many(
            [Completion(c.delivery_id, c.claim_id, "succeeded", attempt()) for c in claims]
        )
        statements.append(list(ran))
    assert statements[0] == statements[1]
    assert len(statements[0]) == 7  # clock, due ids, claim, read; owned, attempts, update


def test_concurrent_claimers_never_share_a_delivery(store_url: str, store: Store) -> None:
    """8 threads over two Store instances claim every delivery exactly once (3 at a time:
    each claim takes one event's person whole, since no claim here is ever finished)."""
    for n in range(40):
        store.ingest(event(n), actions(3))
    other = open_store(store_url)
    barrier = threading.Barrier(8)

    def claimer(i: int) -> list[int]:
        mine: list[int] = []
        target = store if i % 2 else other
        barrier.wait()
        while claims := target.claim_due(f"w{i}", 3, 60.0):
            mine.extend(c.delivery_id for c in claims)
        return mine

    try:
        with ThreadPoolExecutor(8) as pool:
            claimed = [d for batch in pool.map(claimer, range(8)) for d in batch]
    finally:
        other.close()
    assert len(claimed) == 120
    assert len(set(claimed)) == 120


def test_a_person_under_a_live_claim_waits_for_it(store: Store) -> None:
    """One person, one order: while a claim holds a person's deliveries, later deliveries
    of that person (by customer id, else by email whatever its case) are not claimed;
    other people's are; the person is claimable again once the claim is recorded."""
    store.ingest(event(1, customer_id="cus_A", created=200), actions(2))
    store.ingest(event(2, customer_id=None, email="Bo@X.io"), actions(1))
    held = store.claim_due("w1", 10, 60.0)
    assert sorted(c.stripe_event_id for c in held) == ["evt_1", "evt_1", "evt_2"]
    store.ingest(event(3, customer_id="cus_A", created=100), actions(1))
    store.ingest(event(4, customer_id=None, email="bo@x.io"), actions(1))
    store.ingest(event(5, customer_id="cus_B"), actions(1))
    assert [c.stripe_event_id for c in store.claim_due("w2", 10, 60.0)] == ["evt_5"]
    done = [Completion(c.delivery_id, c.claim_id, "succeeded", attempt()) for c in held]
    assert store.finish_many(done) == [True, True, True]
    store.ingest(event(6, customer_id="cus_A", created=50), actions(1))
    # Both of cus_A's waiting deliveries come together, the older Stripe event first.
    later = store.claim_due("w2", 10, 60.0)
    assert [c.stripe_event_id for c in later] == ["evt_6", "evt_3", "evt_4"]


def test_two_claimers_never_hold_one_person_at_once(store_url: str, store: Store) -> None:
    """8 threads over two Store instances claim and finish deliveries of 4 people (60
    events of 2 actions): no claim ever takes a person another claim still holds, and
    every delivery is claimed exactly once."""
    for n in range(60):
        store.ingest(event(n, customer_id=f"cus_{n % 4}"), actions(2))
    other = open_store(store_url)
    person = {f"evt_{n}": f"cus_{n % 4}" for n in range(60)}
    holders: dict[str, int] = {}
    overlaps: list[tuple[str, int, int]] = []
    tries = [0]  # claim_due calls made by all claimers
    guard = threading.Lock()
    barrier = threading.Barrier(8)

    def claimer(i: int) -> list[int]:
        mine: list[int] = []
        target = store if i % 2 else other
        barrier.wait()
        idle_until = time.monotonic() + 1.0  # others may still hold the rest
        while time.monotonic() < idle_until:
            with guard:
                tries[0] += 1
            claims = target.claim_due(f"w{i}", 3, 60.0)
            if not claims:
                continue
            idle_until = time.monotonic() + 1.0
            people = {person[c.stripe_event_id] for c in claims}
            with guard:
                overlaps.extend((p, holders[p], i) for p in people if p in holders)
                holders.update(dict.fromkeys(people, i))
                seen = tries[0]
            mine.extend(c.delivery_id for c in claims)
            # Hold the claim while the others try a few claims (bounded).
            held_until = time.monotonic() + 0.2
            while tries[0] < seen + 4 and time.monotonic() < held_until:
                time.sleep(0.001)
            with guard:  # let go before the finish commits: a new claim may follow it
                for p in people:
                    holders.pop(p, None)
            done = [Completion(c.delivery_id, c.claim_id, "succeeded", attempt()) for c in claims]
            assert all(target.finish_many(done))
        return mine

    try:
        with ThreadPoolExecutor(8) as pool:
            claimed = [d for batch in pool.map(claimer, range(8)) for d in batch]
    finally:
        other.close()
    assert overlaps == []
    assert sorted(claimed) == sorted(set(claimed))
    assert len(claimed) == 120


def test_claims_come_oldest_due_first_with_fresh_claim_ids(store: Store) -> None:
    """claim_due returns the oldest due deliveries first, each with its own claim id; a
    person (here one per event) cut by the limit waits for the claim holding it."""
    for n in range(3):
        store.ingest(event(n), actions(2))
    first = store.claim_due("w", 3, 60.0)
    rest = store.claim_due("w", 10, 60.0)
    assert [c.stripe_event_id for c in first] == ["evt_0", "evt_0", "evt_1"]
    assert [c.stripe_event_id for c in rest] == ["evt_2", "evt_2"]
    assert store.finish_many(
        [Completion(c.delivery_id, c.claim_id, "succeeded", attempt()) for c in first]
    )
    rest += store.claim_due("w", 10, 60.0)
    assert [c.stripe_event_id for c in rest] == ["evt_2", "evt_2", "evt_1"]
    assert len({c.claim_id for c in first + rest}) == 6
    claim = first[0]
    assert (claim.event_type, claim.payload, claim.status) == (
        "customer.created",
        '{"id": "evt_0"}',
        "pending",
    )
    assert (claim.attempt_count, claim.force, claim.sent_ok) == (0, False, False)


def test_expired_lease_is_reclaimed_and_the_old_claim_fenced_out(store: Store) -> None:
    """After a lease expires another claimer gets the delivery; the old owner is fenced out."""
    store.ingest(event(1), actions(1))
    (old,) = store.claim_due("w1", 10, 0.3)
    assert store.claim_due("w2", 10, 60.0) == []  # leased, not yet expired
    new = poll(lambda: store.claim_due("w2", 10, 60.0), "the expired lease to be reclaimed")[0]
    assert new.delivery_id == old.delivery_id
    assert new.claim_id != old.claim_id
    assert not store.complete(old.delivery_id, old.claim_id, "succeeded", attempt())
    assert store.complete(new.delivery_id, new.claim_id, "failed", attempt("terminal_error", 400))
    detail = store.get_event("evt_1")
    assert detail is not None
    (delivery,) = detail.deliveries
    assert delivery.status == "failed"
    assert [a.outcome for a in delivery.attempts] == ["succeeded", "terminal_error"]


def test_a_silent_workers_claims_are_taken_over_before_their_lease_ends(store: Store) -> None:
    """Claims of a worker that stopped beating become claimable at once by another worker's
    beat (not at the end of their 10-minute lease); a live worker's claims stay its own;
    the old owner's late finish is refused by its fencing token and its attempt recorded
    as refused; the silent worker no longer appears among live workers."""
    store.ingest(event(1), actions(3))
    old, new = WorkerInfo("old", "host-a", 1, "1"), WorkerInfo("new", "host-b", 2, "1")
    assert store.beat(old, 0, 30.0) == 0
    held = store.claim_due("old", 10, 600.0)
    assert len(held) == 3
    assert store.beat(new, 0, 30.0) == 0  # "old" beat just now: nothing to take over
    assert store.claim_due("new", 10, 600.0) == []
    assert {w.worker_id: w.host for w in store.list_workers(30.0)} == {
        "old": "host-a",
        "new": "host-b",
    }
    # "old" goes silent: the next beat of "new" counting 0.05 s of silence frees its claims.
    freed = poll(lambda: store.beat(new, 0, 0.05), "the silent worker's claims to be freed")
    assert freed == 3
    taken = store.claim_due("new", 10, 600.0)
    assert sorted(c.delivery_id for c in taken) == sorted(c.delivery_id for c in held)
    assert [w.worker_id for w in store.list_workers(30.0)] == ["new"]
    late = [Completion(c.delivery_id, c.claim_id, "succeeded", attempt()) for c in held]
    assert store.finish_many(late) == [False, False, False]
    done = [Completion(c.delivery_id, c.claim_id, "succeeded", attempt()) for c in taken]
    assert store.finish_many(done) == [True, True, True]
    detail = store.get_event("evt_1")
    assert detail is not None
    for delivery in detail.deliveries:
        assert delivery.status == "succeeded"
        refused, applied = delivery.attempts
        assert "refused" in (refused.error or "")
        assert applied.error is None


def test_a_retired_worker_frees_its_claims_and_leaves_the_list(store: Store) -> None:
    """A worker stopping cleanly frees what it still holds (due at once) and its row goes."""
    store.ingest(event(1), actions(2))
    store.beat(WorkerInfo("w", "host", 7, "1"), 2, 30.0)
    (worker,) = store.list_workers(30.0)
    assert (worker.pid, worker.in_flight, worker.version) == (7, 2, "1")
    assert worker.silent_for < 5.0
    assert len(store.claim_due("w", 10, 600.0)) == 2
    assert store.retire_worker("w") == 2
    assert store.list_workers(30.0) == []
    assert len(store.claim_due("other", 10, 600.0)) == 2


def test_reschedule_makes_retrying_and_due_only_after_the_delay(store: Store) -> None:
    """reschedule() sets retrying, records the attempt and the delivery is due after delay."""
    store.ingest(event(1), actions(1))
    (claim,) = store.claim_due("w", 10, 60.0)
    before = store.now()
    assert store.reschedule(
        claim.delivery_id, claim.claim_id, 0.4, attempt("retryable_error", 503), error="HTTP 503"
    )
    assert store.claim_due("w", 10, 60.0) == []
    again = poll(lambda: store.claim_due("w", 10, 60.0), "the retry to become due")[0]
    assert store.now() >= before + 0.4
    assert (again.status, again.attempt_count) == ("retrying", 1)
    assert not store.reschedule(claim.delivery_id, claim.claim_id, 0.0, attempt())
    detail = store.get_event("evt_1")
    assert detail is not None
    assert detail.deliveries[0].last_error == "HTTP 503"
    assert len(detail.deliveries[0].attempts) == 2


def test_complete_records_sent_ok_and_rejects_open_statuses(store: Store) -> None:
    """complete(sent_ok=True) marks the delivery sent; pending/retrying are not final."""
    store.ingest(event(1), actions(1))
    (claim,) = store.claim_due("w", 10, 60.0)
    with pytest.raises(ValueError, match="final status"):
        store.complete(claim.delivery_id, claim.claim_id, "retrying", None)
    assert store.complete(claim.delivery_id, claim.claim_id, "succeeded", attempt(), sent_ok=True)
    detail = store.get_event("evt_1")
    assert detail is not None
    assert detail.deliveries[0].sent_ok
    assert detail.deliveries[0].next_attempt_at is None


# Replay ----------------------------------------------------------------------------------


def test_finish_many_records_completions_and_retries_in_one_go(store: Store) -> None:
    """finish_many() completes, reschedules and fences each delivery as complete() and
    reschedule() would, and appends every attempt, the fenced-out one included."""
    store.ingest(event(1), actions(3))
    first, second, third = sorted(store.claim_due("w", 10, 60.0), key=lambda c: c.action_index)
    reclaimed = Completion(
        delivery_id=third.delivery_id,
        claim_id="not-the-owner",
        status="succeeded",
        attempt=attempt(),
    )
    owned = store.finish_many(
        [
            Completion(
                delivery_id=first.delivery_id,
                claim_id=first.claim_id,
                status="succeeded",
                attempt=attempt(),
                sent_ok=True,
            ),
            Completion(
                delivery_id=second.delivery_id,
                claim_id=second.claim_id,
                status=None,
                attempt=attempt("retryable_error", 503),
                error="HTTP 503",
                retry_in=0.3,
            ),
            reclaimed,
        ]
    )
    assert owned == [True, True, False]
    assert store.finish_many([]) == []
    detail = store.get_event("evt_1")
    assert detail is not None
    by_index = {d.action_index: d for d in detail.deliveries}
    assert (by_index[0].status, by_index[0].sent_ok, by_index[0].attempt_count) == (
        "succeeded",
        True,
        1,
    )
    assert (by_index[1].status, by_index[1].last_error) == ("retrying", "HTTP 503")
    assert by_index[2].status == "pending"  # fenced out: its owner decides
    assert [len(d.attempts) for d in detail.deliveries] == [1, 1, 1]
    # One person, one order: the retry waits until the person's live claim is recorded.
    assert store.complete(third.delivery_id, third.claim_id, "succeeded", attempt())
    again = poll(lambda: store.claim_due("w", 10, 60.0), "the retry to become due")
    assert [c.delivery_id for c in again] == [second.delivery_id]
    with pytest.raises(ValueError, match="final status"):
        store.finish_many([Completion(first.delivery_id, "x", "pending", attempt())])


def test_replay_event_needs_force_for_sent_deliveries(store: Store) -> None:
    """Replay resets every delivery, except a non-idempotent one already sent unless forced."""
    store.ingest(event(1), actions(2))
    claims = claim_all(store)
    sent, plain = claims[("evt_1", 0)], claims[("evt_1", 1)]
    store.complete(sent.delivery_id, sent.claim_id, "succeeded", attempt(), sent_ok=True)
    store.complete(plain.delivery_id, plain.claim_id, "succeeded", attempt())

    assert store.replay_event("evt_1") == [plain.delivery_id]
    (again,) = store.claim_due("w", 10, 60.0)
    assert (again.delivery_id, again.force, again.attempt_count) == (plain.delivery_id, False, 1)
    store.complete(again.delivery_id, again.claim_id, "succeeded", attempt())

    assert store.replay_event("evt_1", force=True) == sorted([sent.delivery_id, plain.delivery_id])
    forced = claim_all(store)
    assert all(c.force for c in forced.values())
    assert forced[("evt_1", 0)].sent_ok
    retried, other = forced[("evt_1", 0)], forced[("evt_1", 1)]
    store.reschedule(retried.delivery_id, retried.claim_id, 0.0, attempt("retryable_error", 500))
    store.complete(other.delivery_id, other.claim_id, "succeeded", attempt())  # person free
    (still,) = poll(lambda: store.claim_due("w", 10, 60.0), "the forced retry")
    assert still.force  # the force flag survives until the delivery completes
    store.complete(still.delivery_id, still.claim_id, "succeeded", attempt(), sent_ok=True)
    with pytest.raises(KeyError):
        store.replay_event("evt_unknown")


def test_replay_failed_resets_only_matching_failed_deliveries(store: Store) -> None:
    """replay_failed picks failed deliveries of matching events only, and makes them due."""
    store.ingest(event(1, type="charge.failed"), actions(2))
    store.ingest(event(2, type="invoice.paid"), actions(1))
    claims = claim_all(store)
    failed_charge = claims[("evt_1", 0)]
    store.complete(failed_charge.delivery_id, failed_charge.claim_id, "failed", attempt())
    ok = claims[("evt_1", 1)]
    store.complete(ok.delivery_id, ok.claim_id, "succeeded", attempt())
    failed_invoice = claims[("evt_2", 0)]
    store.complete(failed_invoice.delivery_id, failed_invoice.claim_id, "failed", attempt())

    only_charges = EventFilter(type="charge.failed")
    assert store.replay_failed(event_filter=only_charges) == [failed_charge.delivery_id]
    assert store.replay_failed(since=store.now() + 60) == []
    assert store.replay_failed() == [failed_invoice.delivery_id]
    assert {c.delivery_id for c in store.claim_due("w", 10, 60.0)} == {
        failed_charge.delivery_id,
        failed_invoice.delivery_id,
    }


# Reads -----------------------------------------------------------------------------------


def test_list_events_pages_newest_first(store: Store) -> None:
    """list_events pages newest first with a cursor until next_cursor is None."""
    for n in range(7):
        store.ingest(event(n), [])
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        items, cursor = store.list_events(EventFilter(), limit=3, cursor=cursor)
        seen.extend(item.stripe_event_id for item in items)
        pages += 1
        if cursor is None:
            break
    assert pages == 3
    assert seen == [f"evt_{n}" for n in reversed(range(7))]
    with pytest.raises(ValueError, match="cursor"):
        store.list_events(EventFilter(), cursor="not-a-cursor")


def test_list_events_filters(store: Store) -> None:
    """Type, customer (id or email) and received-time filters are applied by the database."""
    store.ingest(event(1, type="charge.failed"), [])
    store.ingest(event(2, customer_id=None, email="shared@x.io"), [])
    store.ingest(event(3, customer_id="cus_shared", email=None), [])

    def ids(event_filter: EventFilter) -> list[str]:
        return [item.stripe_event_id for item in store.list_events(event_filter)[0]]

    assert ids(EventFilter(type="charge.failed")) == ["evt_1"]
    assert ids(EventFilter(customer="shared@x.io")) == ["evt_2"]
    assert ids(EventFilter(customer="cus_shared")) == ["evt_3"]
    assert ids(EventFilter(customer="cus_1", type="customer.created")) == []
    assert ids(EventFilter(since=store.now() + 60)) == []
    assert ids(EventFilter(until=store.now() + 60)) == ["evt_3", "evt_2", "evt_1"]


def test_event_status_is_derived_from_the_worst_delivery(store: Store) -> None:
    """failed > retrying > pending > dry_run > succeeded > skipped; no delivery = ignored."""
    plan: dict[str, list[DeliveryStatus]] = {
        "ignored": [],
        "skipped": ["skipped"],
        "succeeded": ["succeeded", "skipped"],
        "dry_run": ["dry_run", "succeeded"],
        "pending": ["pending", "succeeded"],
        "retrying": ["retrying", "pending"],
        "failed": ["failed", "retrying", "succeeded"],
    }
    for name, statuses in plan.items():
        store.ingest(
            event(name),
            [
                NewDelivery("wf", i, "identify", status="skipped" if s == "skipped" else "pending")
                for i, s in enumerate(statuses)
            ],
        )
    claims = claim_all(store)
    for name, statuses in plan.items():
        for i, status in enumerate(statuses):
            claim = claims.get((f"evt_{name}", i))
            if claim is None or status == "pending":
                continue
            if status == "retrying":
                store.reschedule(claim.delivery_id, claim.claim_id, 3600.0, attempt())
            else:
                store.complete(claim.delivery_id, claim.claim_id, status, attempt())
    listed = {item.stripe_event_id: item for item in store.list_events(EventFilter())[0]}
    for name, statuses in plan.items():
        assert listed[f"evt_{name}"].status == name
        assert listed[f"evt_{name}"].deliveries == len(statuses)
        filtered, _ = store.list_events(EventFilter(status=name))
        assert [item.stripe_event_id for item in filtered] == [f"evt_{name}"]


def test_get_event_lists_attempts_oldest_first(store: Store) -> None:
    """get_event returns each delivery with all its attempts, oldest first."""
    store.ingest(event(1), actions(1))
    outcomes = ["retryable_error", "unknown", "succeeded"]
    for outcome in outcomes[:-1]:
        (claim,) = poll(lambda: store.claim_due("w", 1, 60.0), "the delivery to be due")
        store.reschedule(claim.delivery_id, claim.claim_id, 0.0, attempt(outcome, None))
    (claim,) = poll(lambda: store.claim_due("w", 1, 60.0), "the delivery to be due")
    store.complete(claim.delivery_id, claim.claim_id, "succeeded", attempt(), sent_ok=False)
    detail = store.get_event("evt_1")
    assert detail is not None
    (delivery,) = detail.deliveries
    assert [a.outcome for a in delivery.attempts] == outcomes
    assert delivery.attempt_count == 3
    assert delivery.attempts[0].request == {"method": "POST", "path": "/api/v2/entity"}
    assert [a.attempt_id for a in delivery.attempts] == sorted(
        a.attempt_id for a in delivery.attempts
    )
    assert store.get_event("evt_missing") is None


def test_stats_count_the_queue(store: Store) -> None:
    """stats() reports queue depth, due work, statuses, outcomes and event totals."""
    assert store.stats().last_event_received_at is None
    store.ingest(event(1), actions(2))
    store.ingest(event(2), actions(1))
    claims = claim_all(store)
    done, later = claims[("evt_1", 0)], claims[("evt_1", 1)]
    store.complete(done.delivery_id, done.claim_id, "succeeded", attempt())
    store.reschedule(later.delivery_id, later.claim_id, 3600.0, attempt("retryable_error", 500))
    waiting = claims[("evt_2", 0)]
    store.reschedule(waiting.delivery_id, waiting.claim_id, 0.0, attempt("retryable_error", 429))
    stats = store.stats()
    assert stats.deliveries_by_status == {"succeeded": 1, "retrying": 2}
    assert stats.attempts_by_outcome == {"succeeded": 1, "retryable_error": 2}
    assert (stats.queue_depth, stats.due_now, stats.events_total) == (2, 1, 2)
    assert 0.0 <= stats.oldest_pending_age < 60.0
    detail = store.get_event("evt_2")
    assert detail is not None
    assert stats.last_event_received_at == detail.summary.received_at


# Workflows and meta ----------------------------------------------------------------------


def test_workflows_crud_bumps_version(store: Store) -> None:
    """save_workflow creates (version 1) and replaces (version + 1); list is by name."""
    first = store.save_workflow("zeta", "A first", True, {"actions": [{"type": "identify"}]})
    store.save_workflow("alpha", "B second", False, {})
    assert first.version == 1
    replaced = store.save_workflow("zeta", "A renamed", False, {"actions": []})
    assert (replaced.version, replaced.name, replaced.enabled) == (2, "A renamed", False)
    assert replaced.created_at == first.created_at
    assert replaced.updated_at >= first.updated_at
    assert store.get_workflow("zeta") == replaced
    assert [w.workflow_id for w in store.list_workflows()] == ["zeta", "alpha"]
    assert store.delete_workflow("zeta")
    assert not store.delete_workflow("zeta")
    assert store.get_workflow("zeta") is None


def test_meta_round_trips(store: Store) -> None:
    """set_meta inserts or replaces; get_meta reads it back (None when absent)."""
    assert store.get_meta("seeded") is None
    store.set_meta("seeded", "1")
    store.set_meta("seeded", "2")
    assert store.get_meta("seeded") == "2"


# Wake-ups --------------------------------------------------------------------------------


def _waiter(store: Store, timeout: float) -> tuple[threading.Event, list[tuple[bool, float]]]:
    ready = threading.Event()
    result: list[tuple[bool, float]] = []

    def wait() -> None:
        while store.wait_for_work(0.0):  # drain signals from before the test's action
            pass
        ready.set()
        start = time.monotonic()
        woken = store.wait_for_work(timeout)
        result.append((woken, time.monotonic() - start))

    threading.Thread(target=wait, daemon=True).start()
    assert ready.wait(DEADLINE)
    return ready, result


@pytest.mark.parametrize("action", ["notify", "ingest", "replay"])
def test_wait_for_work_is_woken(store: Store, action: str) -> None:
    """A worker waiting for work wakes on notify_work(), a new ingest and a replay."""
    store.ingest(event(0), actions(1))
    _, result = _waiter(store, 30.0)
    if action == "notify":
        store.notify_work()
    elif action == "ingest":
        store.ingest(event(1), actions(1))
    else:
        store.replay_event("evt_0")
    woken, elapsed = poll(lambda: result[0] if result else None, "the waiter to wake")
    assert woken
    assert elapsed < 5.0


def test_wait_for_work_times_out(store: Store) -> None:
    """Without new work wait_for_work returns False after its timeout."""
    # Settle first: earlier signals, and on PostgreSQL the listener announcing itself.
    deadline = time.monotonic() + DEADLINE
    while store.wait_for_work(0.5):
        assert time.monotonic() < deadline, "wake-ups keep coming with no work"
    start = time.monotonic()
    assert store.wait_for_work(0.2) is False
    assert time.monotonic() - start >= 0.19


@pytest.mark.postgres
def test_notify_wakes_another_postgres_store(migrated_postgres_url: str) -> None:
    """On PostgreSQL an ingest in one process's store wakes waiters of another (NOTIFY)."""
    waiter, writer = PostgresStore(migrated_postgres_url), PostgresStore(migrated_postgres_url)
    try:
        # The first wake-up is the listener announcing itself connected.
        poll(lambda: waiter.wait_for_work(0.1), "the LISTEN connection")
        while waiter.wait_for_work(0.0):
            pass
        writer.ingest(event("notify"), actions(1))
        start = time.monotonic()
        assert waiter.wait_for_work(DEADLINE)
        assert time.monotonic() - start < 5.0
    finally:
        waiter.close()
        writer.close()


# Failures and configuration --------------------------------------------------------------


@pytest.mark.postgres
def test_unreachable_postgres_fails_fast_without_leaking_the_password() -> None:
    """A closed port gives StoreUnavailableError quickly, naming no password; ping is False."""
    store = PostgresStore("postgresql+psycopg://postgres:hunter2@127.0.0.1:1/test")
    try:
        start = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="database is unavailable") as info:
            store.ingest(event(1), actions(1))
        assert time.monotonic() - start < 6.0
        assert "hunter2" not in str(info.value)
        with pytest.raises(StoreUnavailableError):
            store.claim_due("w", 10, 60.0)
        assert store.ping() is False
    finally:
        store.close()


def test_open_store_picks_the_driver(tmp_path: Path) -> None:
    """open_store maps URLs to drivers, creates SQLite's directory and refuses the rest."""
    sqlite_store = open_store(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'b.db'}")
    try:
        assert isinstance(sqlite_store, SqliteStore)
        assert (tmp_path / "nested" / "dir").is_dir()
    finally:
        sqlite_store.close()
    for url in ("postgres://u:p@127.0.0.1:1/x", "postgresql://u@h/x", "postgresql+psycopg://h/x"):
        pg_store = open_store(url)
        assert isinstance(pg_store, PostgresStore)
        pg_store.close()
    for bad in ("mysql://u:secret@h/x", "sqlite://", "sqlite:///:memory:", "nonsense"):
        with pytest.raises(ConfigurationError, match="DATABASE_URL") as info:
            open_store(bad)
        assert "secret" not in str(info.value)
