"""The SQLite group-commit writer: a failing write is undone alone; its batch still commits."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billbridge.billing.projection import rows_for_event
from billbridge.store import outbox
from billbridge.store.outbox import Finish, Ingest
from billbridge.store.records import (
    AttemptRecord,
    Completion,
    CustomerRecord,
    IngestResult,
    NewDelivery,
    NewEvent,
)
from billbridge.store.records_billing import BillingRow
from billbridge.store.sql import _IngestJob
from billbridge.store.sqlite import SqliteStore
from billbridge.store.tables_billing import BILLING_TABLES
from billbridge.store.writer import Job
from billbridge.stripe.events import new_event_from


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(f"sqlite:///{tmp_path / 'writer.db'}")
    store.migrate()
    try:
        yield store
    finally:
        store.close()


def _poll(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_a_failing_job_is_undone_alone_and_the_rest_of_its_batch_commits(
    sqlite_store: SqliteStore,
) -> None:
    """A job that raises inside a batch leaves nothing; the writes around it all commit."""
    store = sqlite_store
    gate, running = threading.Event(), threading.Event()

    def blocker(conn: Connection) -> str:
        running.set()
        gate.wait(10)
        return "first"

    def failing(conn: Connection) -> None:
        conn.execute(sa.text("INSERT INTO meta (key, value) VALUES ('bad', 'half-written')"))
        raise ValueError("boom")

    with ThreadPoolExecutor(max_workers=8) as pool:
        first = pool.submit(store._write, blocker)
        _poll(running.is_set)  # the writer is busy: what follows queues up as ONE batch
        writes = [pool.submit(store.set_meta, f"key{i}", str(i)) for i in range(3)]
        bad = pool.submit(store._write, failing)
        writes += [pool.submit(store.set_meta, f"key{i}", str(i)) for i in range(3, 6)]
        _poll(lambda: store._writer.queued() == 7)
        gate.set()
        assert first.result(timeout=10) == "first"
        for future in writes:
            future.result(timeout=10)
        with pytest.raises(ValueError, match="boom"):
            bad.result(timeout=10)

    assert store.get_meta("bad") is None  # the failing job left nothing
    assert [store.get_meta(f"key{i}") for i in range(6)] == [str(i) for i in range(6)]


def _story() -> list[tuple[NewEvent, list[NewDelivery], CustomerRecord | None, list[BillingRow]]]:
    """Ingests as the webhook path makes them: billing rows, a customer, decided deliveries,
    an event id seen twice, and one that fails (two deliveries for one action)."""
    cus = "cus_story"
    subscription = {
        "object": "subscription",
        "id": "sub_story",
        "customer": cus,
        "status": "active",
        "currency": "usd",
        "created": 1_000,
        "cancel_at_period_end": False,
        "items": {"data": [{"price": {"id": "price_1", "unit_amount": 900}, "quantity": 1}]},
        "livemode": False,
    }
    charge = {
        "object": "charge",
        "id": "ch_story",
        "customer": cus,
        "status": "succeeded",
        "paid": True,
        "amount": 900,
        "amount_refunded": 0,
        "currency": "usd",
        "created": 1_100,
        "livemode": False,
    }
    updated = {**subscription, "status": "past_due"}
    stripe_events = [
        ("evt_b1", "customer.subscription.created", subscription, 100),
        ("evt_b2", "charge.succeeded", charge, 110),
        ("evt_b3", "customer.subscription.updated", updated, 120),
        ("evt_b1", "customer.subscription.created", subscription, 100),  # again in the batch
        ("evt_b0", "charge.succeeded", charge, 90),  # stored before the batch
        ("evt_b4", "customer.created", {"object": "customer", "id": cus}, 130),
        ("evt_b5", "charge.succeeded", {**charge, "id": "ch_late"}, 140),
        # An older snapshot (not written) and a new charge: one multi-row upsert.
        ("evt_b6", "charge.succeeded", {**charge, "status": "pending"}, 80),
        ("evt_b7", "charge.succeeded", {**charge, "id": "ch_other"}, 150),
        # A charge stored without its customer learns it from an older snapshot.
        ("evt_b8", "charge.succeeded", {**charge, "id": "ch_anon", "customer": None}, 200),
        ("evt_b9", "charge.succeeded", {**charge, "id": "ch_anon", "status": "pending"}, 190),
        ("evt_b10", "charge.succeeded", {**charge, "id": "ch_another"}, 210),
        # Customers: a newer snapshot, then an older one (ignored) next to another customer.
        ("evt_b11", "customer.updated", {"object": "customer", "id": cus}, 220),
        ("evt_b12", "customer.updated", {"object": "customer", "id": cus}, 100),
        ("evt_b13", "customer.created", {"object": "customer", "id": "cus_two"}, 230),
    ]
    story = []
    for stripe_id, event_type, obj, created in stripe_events:
        body = {
            "id": stripe_id,
            "object": "event",
            "type": event_type,
            "created": created,
            "livemode": False,
            "data": {"object": obj},
        }
        deliveries = [
            NewDelivery("wf_a", 0, "identify"),
            NewDelivery("wf_a", 1, "track_event", status="skipped", reason="filter"),
            NewDelivery("wf_b", 0, "track_event", status="dry_run", reason="test mode"),
        ]
        customer = None
        if event_type.startswith("customer.") and obj["object"] == "customer":
            email = f"{obj['id']}-{created}@example.com"
            customer = CustomerRecord(obj["id"], email, "Story", 130, watermark=created)
        story.append(
            (new_event_from(body, json.dumps(body)), deliveries, customer, rows_for_event(body))
        )
    clash = [NewDelivery("wf", 0, "identify"), NewDelivery("wf", 0, "identify")]
    failing = story[1][0].__class__(**{**story[1][0].__dict__, "stripe_event_id": "evt_bad"})
    story.insert(5, (failing, clash, None, []))
    return story


def _tables(store: SqliteStore) -> dict[str, list[dict[str, object]]]:
    """Every stored row, clock columns left out (checked apart)."""
    clock = {"received_at", "created_at", "updated_at", "next_attempt_at", "deadline_at"}
    names = ["events", "deliveries", "customers", *sorted(t.name for t in BILLING_TABLES.values())]
    with store._engine.connect() as conn:
        return {
            name: [
                {k: v for k, v in row._mapping.items() if k not in clock}
                for row in conn.execute(sa.text(f"SELECT * FROM {name} ORDER BY 1"))
            ]
            for name in names
        }


@pytest.mark.parametrize("variant", ["all-good", "one-fails", "all-new"])
def test_a_batch_of_ingests_stores_what_one_by_one_ingests_store(
    tmp_path: Path, variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer runs a batch's ingests together (multi-row statements): same results and
    the same rows as ingesting them one at a time. With a failing ingest in the batch, the
    batch runs again job by job and the failing one alone is refused."""
    story = _story()
    with_failure = variant == "one-fails"
    if not with_failure:
        story.pop(5)
    (stored_before,) = [item for item in story if item[0].stripe_event_id == "evt_b0"]
    if variant == "all-new":  # no event id seen before (the writer then reads no ids back)
        story = story[:3] + story[5:]

    def outcome(ingest: Callable[[], IngestResult]) -> object:
        try:
            result = ingest()
        except sa.exc.IntegrityError:
            return "refused"
        return (result.inserted, result.event_id, result.deliveries)

    one_by_one = SqliteStore(f"sqlite:///{tmp_path / 'one.db'}")
    together = SqliteStore(f"sqlite:///{tmp_path / 'batch.db'}")
    try:
        for store in (one_by_one, together):
            store.migrate()
            store.ingest(*stored_before[:3], billing=stored_before[3])
        expected = [
            outcome(lambda e=e, d=d, c=c, b=b: one_by_one.ingest(e, d, c, billing=b))
            for e, d, c, b in story
        ]

        batches: list[int] = []
        ingest_many = outbox.ingest_many

        def counted(db: outbox.Db, ingests: Sequence[Ingest]) -> list[IngestResult]:
            batches.append(len(ingests))
            return ingest_many(db, ingests)

        runs: list[bool] = []  # each transaction: job by job (isolated) or not
        run_jobs = together._writer.run_jobs

        def recorded(conn: Connection, jobs: list[Job], *, isolated: bool) -> Any:
            runs.append(isolated)
            return run_jobs(conn, jobs, isolated=isolated)

        monkeypatch.setattr(outbox, "ingest_many", counted)
        together._writer.run_jobs = recorded  # type: ignore[method-assign]
        gate, running = threading.Event(), threading.Event()

        def blocker(conn: Connection) -> None:
            running.set()
            gate.wait(10)

        with ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(together._write, blocker)
            _poll(running.is_set)
            futures: list[Future[IngestResult]] = []
            for e, d, c, b in story:  # queued in this order, behind the blocker
                future: Future[IngestResult] = Future()
                job = _IngestJob(together, Ingest(e, d, c, 259_200.0, b))
                together._writer.submit(Job(job, future=future))
                futures.append(future)
            gate.set()
            first.result(timeout=10)
            got = [outcome(lambda f=f: f.result(timeout=10)) for f in futures]
    finally:
        one_by_one.close()
        together.close()

    # In one go; a failure re-runs the batch job by job, each an ingest of one.
    assert batches == [len(story)] + ([1] * len(story) if with_failure else [])
    assert runs == ([False, False, True] if with_failure else [False, False])  # blocker, batch
    assert got == expected
    assert expected.count("refused") == (1 if with_failure else 0)
    inserted = [o[0] for o in expected if isinstance(o, tuple)]
    seen_before = [] if variant == "all-new" else [False, False]
    assert inserted == [True, True, True, *seen_before] + [True] * 10
    tables = _tables(together)
    assert tables == _tables(one_by_one)
    assert [len(tables[name]) for name in ("events", "deliveries", "customers")] == [14, 42, 2]
    emails = {row["stripe_customer_id"]: row["email"] for row in tables["customers"]}
    assert emails == {
        "cus_story": "cus_story-220@example.com",
        "cus_two": "cus_two-230@example.com",
    }
    charges = {row["id"]: row for row in tables["billing_charges"]}
    assert sorted(charges) == ["ch_anon", "ch_another", "ch_late", "ch_other", "ch_story"]
    assert charges["ch_story"]["status"] == "succeeded"  # the older snapshot lost
    assert (charges["ch_anon"]["status"], charges["ch_anon"]["customer_id"]) == (
        "succeeded",
        "cus_story",
    )
    with together._engine.connect() as conn:
        clocks = conn.execute(
            sa.text(
                "SELECT d.status, d.next_attempt_at - e.received_at, d.deadline_at - e.received_at,"
                " d.created_at - e.received_at FROM deliveries d JOIN events e ON e.id = d.event_id"
            )
        ).all()
    assert {tuple(row) for row in clocks} == {
        ("pending", 0.0, 259_200.0, 0.0),
        ("skipped", None, 259_200.0, 0.0),
        ("dry_run", None, 259_200.0, 0.0),
    }


def test_finish_many_together_records_what_one_by_one_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Completions of distinct deliveries are recorded together (`finish_together` once);
    a call naming a delivery twice records them one at a time, in order. Both leave the
    same rows: final statuses, retries, sent_ok, force cleared, fenced-out claims untouched,
    every attempt appended."""

    def prepare(store: SqliteStore) -> list[Completion]:
        store.migrate()
        for n in range(3):
            body = {
                "id": f"evt_f{n}",
                "object": "event",
                "type": "charge.succeeded",
                "created": 100 + n,
                "livemode": False,
                "data": {"object": {"id": f"ch_{n}"}},
            }
            actions = [NewDelivery("wf", i, "track_event") for i in range(3)]
            store.ingest(new_event_from(body, json.dumps(body)), actions)
        claims = sorted(store.claim_due("w", 100, 60.0), key=lambda c: c.delivery_id)
        assert len(claims) == 9
        with store._write_engine.begin() as conn:  # as a forced replay leaves them
            conn.execute(
                sa.text("UPDATE deliveries SET force = 1 WHERE stripe_event_id = 'evt_f1'")
            )
        completions = []
        for i, claim in enumerate(claims):
            record = AttemptRecord(
                outcome="succeeded",
                started_at=1_000.0 + i,
                duration_ms=i,
                request={"n": i},
                response_status=200,
                response_body="{}",
            )
            if i % 4 == 1:
                completions.append(
                    Completion(
                        claim.delivery_id,
                        claim.claim_id,
                        None,
                        record,
                        error="HTTP 503",
                        retry_in=30.0,
                    )
                )
            elif i % 4 == 2:
                completions.append(
                    Completion(
                        claim.delivery_id, claim.claim_id, "failed", record, error="HTTP 400"
                    )
                )
            elif i % 4 == 3:
                completions.append(Completion(claim.delivery_id, "stolen", "succeeded", record))
            else:
                completions.append(
                    Completion(claim.delivery_id, claim.claim_id, "succeeded", record, sent_ok=True)
                )
        return completions

    def rows(store: SqliteStore) -> dict[str, list[dict[str, object]]]:
        # Clocks, and the claim ids (random) the fenced-out deliveries still hold, aside.
        clock = {"created_at", "updated_at", "next_attempt_at", "lease_until", "deadline_at"}
        clock.add("claim_id")
        with store._engine.connect() as conn:
            return {
                name: [
                    {k: v for k, v in row._mapping.items() if k not in clock}
                    for row in conn.execute(sa.text(f"SELECT * FROM {name} ORDER BY id"))
                ]
                for name in ("deliveries", "attempts")
            }

    together = SqliteStore(f"sqlite:///{tmp_path / 'together.db'}")
    one_by_one = SqliteStore(f"sqlite:///{tmp_path / 'one.db'}")
    try:
        completions = prepare(together)
        calls: list[int] = []
        finish_together = outbox.finish_together

        def counted(db: outbox.Db, batch: Sequence[Finish]) -> list[bool]:
            calls.append(len(batch))
            return finish_together(db, batch)

        monkeypatch.setattr(outbox, "finish_together", counted)
        again = Completion(completions[0].delivery_id, "late", "failed", completions[0].attempt)
        owned = together.finish_many(completions) + together.finish_many([again])
        assert calls == [9, 1]
        # The same completions with the repeated one in the same call: one at a time.
        expected = one_by_one.finish_many([*prepare(one_by_one), again])
        assert owned == expected == [i % 4 != 3 for i in range(9)] + [False]
        assert calls == [9, 1] + [1] * 10
        assert rows(together) == rows(one_by_one)
        deliveries = rows(together)["deliveries"]
        statuses = [d["status"] for d in deliveries]
        assert statuses == ["succeeded", "retrying", "failed", "pending"] * 2 + ["succeeded"]
        assert [d["sent_ok"] for d in deliveries] == [1, 0, 0, 0, 1, 0, 0, 0, 1]
        assert [d["attempt_count"] for d in deliveries] == [1, 1, 1, 0] * 2 + [1]
        # evt_f1's deliveries (ids 4-6) had `force`: a final status clears it; a fenced-out
        # completion and a retry keep it.
        assert [d["force"] for d in deliveries[3:6]] == [1, 0, 1]
        assert [d["last_error"] for d in deliveries[:3]] == [None, "HTTP 503", "HTTP 400"]
        with together._engine.connect() as conn:
            held = conn.execute(sa.text("SELECT status FROM deliveries WHERE claim_id IS NOT NULL"))
            assert [row.status for row in held] == ["pending", "pending"]  # the fenced-out two
            retry = conn.execute(
                sa.text("SELECT next_attempt_at FROM deliveries WHERE status = 'retrying'")
            )
            assert all(row.next_attempt_at is not None for row in retry)
        assert len(rows(together)["attempts"]) == 10
    finally:
        together.close()
        one_by_one.close()


def test_two_stores_on_one_file_take_turns_without_sqlite_busy_waits(tmp_path: Path) -> None:
    """Writers of one database file in different processes (here: two stores, each with its
    own lock file descriptor, as two processes would have) take turns on a blocking flock
    around each batch, so the second one waits for the first's commit however long it takes
    instead of failing after SQLite's busy timeout (or sleeping in its busy handler)."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = SqliteStore(url)
    first.migrate()
    second = SqliteStore(url, busy_timeout=0.05)  # SQLite alone gives up after 50 ms
    gate, running = threading.Event(), threading.Event()

    def long_write(conn: Connection) -> None:
        conn.execute(sa.text("INSERT INTO meta (key, value) VALUES ('first', '1')"))
        running.set()
        gate.wait(10)

    try:
        assert (tmp_path / "shared.db.writelock").exists()
        with ThreadPoolExecutor(max_workers=2) as pool:
            held = pool.submit(first._write, long_write)
            _poll(running.is_set)
            waiting = pool.submit(second.set_meta, "second", "2")
            # Six busy timeouts later the second write still waits its turn (without the
            # flock it fails with "database is locked" after 50 ms).
            with pytest.raises(FuturesTimeout):
                waiting.result(timeout=0.3)
            gate.set()
            held.result(timeout=10)
            waiting.result(timeout=10)
        assert (first.get_meta("first"), first.get_meta("second")) == ("1", "2")
    finally:
        gate.set()
        first.close()
        second.close()
