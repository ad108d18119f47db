"""The implementation of Store shared by the SQLite and PostgreSQL drivers.

Every write goes through the store's group-commit `Writer` (`store/writer.py`). The hot
paths (ingest, claims, finishes, customer and billing upserts, heartbeats) are the batched
algorithms of `store/outbox.py` over the dialect's named statements; the rest (replay,
reads, workflows, meta, access) is SQLAlchemy Core. A driver supplies its engines, its
statements, the DB-API error class, the database clock (`_now_expr`), the dialect's
INSERT with ON CONFLICT (`_insert`) and how workers are woken.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from billbridge.compact_json import compact_json_text
from billbridge.errors import EventPrunedError
from billbridge.store import outbox, queries
from billbridge.store.outbox import (
    UNAVAILABLE_ERRORS,
    Db,
    Finish,
    Ingest,
    unavailable_error,
    unavailable_on_errors,
)
from billbridge.store.records import (
    FINAL_STATUSES,
    AttemptRecord,
    ClaimedDelivery,
    Completion,
    CustomerRecord,
    DeliveryStatus,
    EventDetail,
    EventFilter,
    EventSummary,
    HourlyVolume,
    IngestResult,
    NewDelivery,
    NewEvent,
    StoreStats,
    WorkerInfo,
    WorkerRecord,
    WorkflowRecord,
)
from billbridge.store.records_billing import BillingRow, DiscoveredFacts
from billbridge.store.sql_access import SqlAccessMixin
from billbridge.store.sql_billing import SqlBillingMixin
from billbridge.store.sql_fleet import SqlFleetMixin
from billbridge.store.sql_hooks import Insert, T
from billbridge.store.sql_ops import SqlOpsMixin
from billbridge.store.sql_privacy import SqlPrivacyMixin
from billbridge.store.statements import Statements
from billbridge.store.tables import customers, deliveries, events, meta, workflows
from billbridge.store.writer import Gathered, Writer

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

__all__ = [
    "UNAVAILABLE_ERRORS",
    "Insert",
    "SqlStore",
    "read_schema_revisions",
    "run_migrations",
    "unavailable_error",
    "unavailable_on_errors",
]


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def run_migrations(connection: Connection) -> None:
    """Alembic `upgrade heads` on `connection` (inside the caller's transaction)."""
    config = _alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "heads")


@functools.cache
def shipped_heads() -> frozenset[str]:
    """The newest revisions shipped with this version (read once: parsing the migration
    scripts costs ~10 ms of CPU, ~50 ms under load, and `/readyz` probes ask often)."""
    return frozenset(ScriptDirectory.from_config(_alembic_config()).get_heads())


def read_schema_revisions(connection: Connection) -> tuple[frozenset[str], frozenset[str]]:
    """(revisions applied to the database, newest revisions shipped with this version)."""
    applied = MigrationContext.configure(connection).get_current_heads()
    return frozenset(applied), shipped_heads()


_GET_CUSTOMER = sa.select(customers).where(
    customers.c.stripe_customer_id == sa.bindparam("stripe_customer_id", type_=sa.String())
)


class WakeUp:
    """An in-process wake-up that loses no signal: each thread remembers what it saw."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._sequence = 0
        self._seen = threading.local()

    def notify(self) -> None:
        with self._condition:
            self._sequence += 1
            self._condition.notify_all()

    def wait(self, timeout: float) -> bool:
        """True when notified since this thread last returned from wait (or now)."""
        with self._condition:
            # A thread's first wait counts every signal so far: a spurious wake-up is
            # cheap, a lost one costs a whole timeout.
            seen: int = getattr(self._seen, "sequence", 0)
            if self._sequence == seen:
                self._condition.wait_for(lambda: self._sequence != seen, max(timeout, 0.0))
            woken = self._sequence != seen
            self._seen.sequence = self._sequence
            return woken


def _json(value: Any) -> str:
    return compact_json_text(value)


class _IngestJob(Gathered):
    """An ingest for the writer: consecutive ones of a batch are stored together."""

    def __init__(self, store: SqlStore, ingest: Ingest) -> None:
        self.store = store
        self.ingest = ingest

    @classmethod
    def run_together(cls, conn: Connection, jobs: Sequence[_IngestJob]) -> list[IngestResult]:
        store = jobs[0].store
        ingests = [job.ingest for job in jobs]
        db = store._db(conn)
        with db.batch():
            return outbox.ingest_many(db, ingests)


class SqlStore(SqlAccessMixin, SqlOpsMixin, SqlBillingMixin, SqlFleetMixin, SqlPrivacyMixin):
    """Store over SQLAlchemy Core; subclasses provide transactions and dialect details."""

    def __init__(
        self,
        engine: Engine,
        writer: Writer,
        statements: Statements,
        driver_errors: type[Exception],
    ) -> None:
        self._engine = engine  # the engine reads go through
        self._writer = writer
        self._statements = statements
        self._driver_errors = driver_errors
        self._pipelined = statements.dialect == "postgres"  # psycopg's pipeline mode
        self._wake = WakeUp()

    # Driver hooks -------------------------------------------------------------------------

    def _write(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` in a write transaction (the writer's), durable when this returns."""
        return self._writer.write(fn)

    async def _write_async(self, fn: Callable[[Connection], T]) -> T:
        """`_write` awaited on the event loop (no worker thread per call)."""
        return await self._writer.write_async(fn)

    def _db(self, conn: Connection) -> Db:
        """The named statements on `conn`'s DB-API connection (same transaction)."""
        return Db(
            self._statements,
            conn.connection.driver_connection,
            self._driver_errors,
            pipelined=self._pipelined,
        )

    def _work_committed(self) -> None:
        """Called once a transaction that made deliveries due has committed: wakes this
        process's waiters (PostgreSQL: and other processes', through NOTIFY)."""
        self._wake.notify()

    def _read(self, fn: Callable[[Connection], T]) -> T:
        with unavailable_on_errors(), self._engine.connect() as conn, conn.begin():
            return fn(conn)

    def _db_now(self, conn: Connection) -> float:
        return float(conn.execute(sa.select(self._now_expr)).scalar_one())

    # Lifecycle ----------------------------------------------------------------------------

    def schema_revisions(self) -> tuple[frozenset[str], frozenset[str]]:
        return self._read(read_schema_revisions)

    def ping(self) -> bool:
        try:
            self._read(lambda conn: conn.execute(sa.select(1)).scalar_one())
        except Exception:
            return False
        return True

    def now(self) -> float:
        return self._read(self._db_now)

    def wait_for_work(self, timeout: float) -> bool:
        return self._wake.wait(timeout)

    def notify_work(self) -> None:
        """Wake this process's waiters now (PostgreSQL: and other processes', through
        NOTIFY; best effort: a worker that misses it still polls)."""
        self._work_committed()

    # Ingest -------------------------------------------------------------------------------

    def ingest(
        self,
        event: NewEvent,
        deliveries: Sequence[NewDelivery],
        customer: CustomerRecord | None = None,
        retry_window: float = 259_200.0,
        billing: Sequence[BillingRow] = (),
    ) -> IngestResult:
        ingest = Ingest(event, deliveries, customer, retry_window, billing)
        return self._ingested(self._write(_IngestJob(self, ingest)), ingest)

    async def ingest_async(
        self,
        event: NewEvent,
        deliveries: Sequence[NewDelivery],
        customer: CustomerRecord | None = None,
        retry_window: float = 259_200.0,
        billing: Sequence[BillingRow] = (),
    ) -> IngestResult:
        ingest = Ingest(event, deliveries, customer, retry_window, billing)
        return self._ingested(await self._write_async(_IngestJob(self, ingest)), ingest)

    def _ingested(self, result: IngestResult, ingest: Ingest) -> IngestResult:
        if outbox.makes_work([ingest], [result]):
            self._work_committed()
        return result

    # The queue ----------------------------------------------------------------------------

    def claim_due(self, worker_id: str, limit: int, lease_seconds: float) -> list[ClaimedDelivery]:
        if limit <= 0:
            return []
        return self._write(
            lambda conn: outbox.claim(self._db(conn), worker_id, limit, lease_seconds)
        )

    def complete(
        self,
        delivery_id: int,
        claim_id: str,
        status: DeliveryStatus,
        attempt: AttemptRecord | None,
        *,
        error: str | None = None,
        sent_ok: bool | None = None,
    ) -> bool:
        if status not in FINAL_STATUSES:
            raise ValueError(f"complete() takes a final status, not {status!r}")
        done = Finish(
            delivery_id, claim_id, status, attempt, error, sent_ok, counted=attempt is not None
        )
        return self._finish([done])[0]

    def reschedule(
        self,
        delivery_id: int,
        claim_id: str,
        delay_seconds: float,
        attempt: AttemptRecord,
        *,
        error: str | None = None,
    ) -> bool:
        return self._finish(
            [Finish(delivery_id, claim_id, None, attempt, error, None, delay_seconds)]
        )[0]

    def finish_many(
        self, completions: Sequence[Completion], facts: DiscoveredFacts | None = None
    ) -> list[bool]:
        for c in completions:
            if c.status is not None and c.status not in FINAL_STATUSES:
                raise ValueError(f"a completion takes a final status, not {c.status!r}")
        return self._finish(
            [
                Finish(
                    c.delivery_id, c.claim_id, c.status, c.attempt, c.error, c.sent_ok, c.retry_in
                )
                for c in completions
            ],
            facts,
        )

    def _finish(self, finishes: list[Finish], facts: DiscoveredFacts | None = None) -> list[bool]:
        if not finishes and not facts:
            return []
        return self._write(lambda conn: outbox.finish(self._db(conn), finishes, facts))

    # Heartbeats ---------------------------------------------------------------------------

    def beat(self, worker: WorkerInfo, in_flight: int, silent_after: float) -> int:
        freed = self._write(
            lambda conn: outbox.beat(self._db(conn), worker, in_flight, silent_after)
        )
        if freed:
            self._work_committed()
        return freed

    def retire_worker(self, worker_id: str) -> int:
        freed = self._write(lambda conn: outbox.retire(self._db(conn), worker_id))
        if freed:
            self._work_committed()
        return freed

    def list_workers(self, alive_within: float) -> list[WorkerRecord]:
        return self._read(lambda conn: outbox.live_workers(self._db(conn), alive_within))

    # Replay -------------------------------------------------------------------------------

    def replay_event(
        self, stripe_event_id: str, *, force: bool = False, retry_window: float = 259_200.0
    ) -> list[int]:
        def replay(conn: Connection) -> list[int]:
            found = conn.execute(
                sa.select(events.c.id, events.c.pruned_reason).where(
                    events.c.stripe_event_id == stripe_event_id,
                )
            ).first()
            if found is None:
                raise KeyError(stripe_event_id)
            if found.pruned_reason is not None:
                raise EventPrunedError(stripe_event_id, str(found.pruned_reason))
            event_id = found.id
            where = [deliveries.c.event_id == event_id]
            if not force:
                where.append(sa.not_(queries.replay_holds_back()))
            return self._reset_tx(conn, where, force, retry_window)

        reset = self._write(replay)
        if reset:
            self._work_committed()
        return reset

    def replay_failed(
        self,
        *,
        since: float | None = None,
        event_filter: EventFilter | None = None,
        retry_window: float = 259_200.0,
    ) -> list[int]:
        conditions = queries.event_conditions(event_filter or EventFilter())
        if since is not None:
            conditions.append(events.c.received_at >= since)
        # An event whose payload was removed (retention, erasure) is never replayed.
        matching = sa.select(events.c.id).where(*conditions, events.c.pruned_at.is_(None))
        where = [
            deliveries.c.status == "failed",
            # An email or broadcast that was (or may have been) sent needs
            # replay_event(force=True).
            sa.not_(queries.replay_holds_back()),
            deliveries.c.event_id.in_(matching),
        ]
        reset = self._write(lambda conn: self._reset_tx(conn, where, False, retry_window))
        if reset:
            self._work_committed()
        return reset

    def _reset_tx(
        self,
        conn: Connection,
        where: list[sa.ColumnElement[bool]],
        force: bool,
        retry_window: float,
    ) -> list[int]:
        now = self._db_now(conn)
        # A delivery under a live lease is being attempted right now: resetting it would
        # fence out that attempt's outcome (a send's sent_ok included), so leave it be.
        live_lease = sa.and_(deliveries.c.claim_id.is_not(None), deliveries.c.lease_until > now)
        stmt = (
            sa.update(deliveries)
            .where(*where, sa.not_(live_lease))
            .values(
                status="pending",
                next_attempt_at=now,
                deadline_at=now + retry_window,
                lease_until=None,
                claim_id=None,
                force=force,
                updated_at=now,
            )
            .returning(deliveries.c.id)
        )
        return sorted(int(i) for i in conn.execute(stmt).scalars())

    # Reads --------------------------------------------------------------------------------

    def list_events(
        self, event_filter: EventFilter, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[EventSummary], str | None]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        stmt = queries.summary_select().where(*queries.event_conditions(event_filter))
        if cursor is not None:
            stmt = stmt.where(events.c.id < queries.decode_cursor(cursor))
        stmt = stmt.order_by(events.c.id.desc()).limit(limit + 1)
        rows = self._read(lambda conn: conn.execute(stmt).all())
        items = [queries.event_summary(row) for row in rows[:limit]]
        next_cursor = queries.encode_cursor(items[-1].event_id) if len(rows) > limit else None
        return items, next_cursor

    def get_event(self, stripe_event_id: str) -> EventDetail | None:
        return self._read(lambda conn: queries.load_event_detail(conn, stripe_event_id))

    def stats(self) -> StoreStats:
        return self._read(lambda conn: queries.load_stats(conn, self._db_now(conn)))

    def hourly_volume(self, hours: int = 24) -> list[HourlyVolume]:
        if hours < 1:
            raise ValueError("hours must be at least 1")
        return self._read(lambda conn: queries.load_hourly_volume(conn, self._db_now(conn), hours))

    # Customers ----------------------------------------------------------------------------

    def upsert_customer(self, customer: CustomerRecord) -> bool:
        return self._write(lambda conn: outbox.upsert_customers(self._db(conn), [customer]) > 0)

    def get_customer(self, stripe_customer_id: str) -> CustomerRecord | None:
        # Read for most deliveries (identity resolution): the statement is built once.
        parameters = {"stripe_customer_id": stripe_customer_id}
        row = self._read(lambda conn: conn.execute(_GET_CUSTOMER, parameters).first())
        return None if row is None else queries.customer_record(row)

    # Workflows ----------------------------------------------------------------------------

    def list_workflows(self) -> list[WorkflowRecord]:
        stmt = sa.select(workflows).order_by(workflows.c.name, workflows.c.workflow_id)
        rows = self._read(lambda conn: conn.execute(stmt).all())
        return [queries.workflow_record(row) for row in rows]

    def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        stmt = sa.select(workflows).where(workflows.c.workflow_id == workflow_id)
        row = self._read(lambda conn: conn.execute(stmt).first())
        return None if row is None else queries.workflow_record(row)

    def save_workflow(
        self, workflow_id: str, name: str, enabled: bool, definition: dict[str, Any]
    ) -> WorkflowRecord:
        stmt = self._insert(workflows).values(
            workflow_id=workflow_id,
            name=name,
            enabled=enabled,
            definition=_json(definition),
            version=1,
            created_at=self._now_expr,
            updated_at=self._now_expr,
        )
        upsert = stmt.on_conflict_do_update(
            index_elements=[workflows.c.workflow_id],
            set_={
                "name": stmt.excluded.name,
                "enabled": stmt.excluded.enabled,
                "definition": stmt.excluded.definition,
                "version": workflows.c.version + 1,
                "updated_at": stmt.excluded.updated_at,
            },
        ).returning(*workflows.c)
        row = self._write(lambda conn: conn.execute(upsert).one())
        return queries.workflow_record(row)

    def delete_workflow(self, workflow_id: str) -> bool:
        stmt = sa.delete(workflows).where(workflows.c.workflow_id == workflow_id)
        return self._write(lambda conn: conn.execute(stmt).rowcount == 1)

    def get_meta(self, key: str) -> str | None:
        stmt = sa.select(meta.c.value).where(meta.c.key == key)
        value = self._read(lambda conn: conn.execute(stmt).scalar_one_or_none())
        return None if value is None else str(value)

    def set_meta(self, key: str, value: str) -> None:
        stmt = self._insert(meta).values(key=key, value=value)
        upsert = stmt.on_conflict_do_update(
            index_elements=[meta.c.key], set_={"value": stmt.excluded.value}
        )
        self._write(lambda conn: conn.execute(upsert))
