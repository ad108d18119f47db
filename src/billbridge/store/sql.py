"""The SQLAlchemy Core implementation of Store shared by the SQLite and PostgreSQL drivers.

A driver supplies how a write transaction runs (`_write`), the database clock
(`_now_expr`), the dialect's INSERT with ON CONFLICT (`_insert`), row locking for claims
(`_lock_due`) and how workers are woken. Every operation here is a function of one
connection inside one transaction, so each driver decides where and how it commits.
"""

from __future__ import annotations

import threading
import uuid
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from billbridge.compact_json import compact_json_text
from billbridge.errors import StoreUnavailableError
from billbridge.store import queries
from billbridge.store.records import (
    DUE_STATUSES,
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
    WorkflowRecord,
)
from billbridge.store.records_billing import BillingRow
from billbridge.store.sql_access import SqlAccessMixin
from billbridge.store.sql_billing import SqlBillingMixin
from billbridge.store.sql_fleet import SqlFleetMixin
from billbridge.store.tables import attempts, customers, deliveries, events, meta, workflows

T = TypeVar("T")
Insert = sqlite.Insert | postgresql.Insert

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Errors that mean "the database cannot take this right now", as opposed to a bug.
UNAVAILABLE_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)


def unavailable_error(exc: BaseException) -> StoreUnavailableError:
    """The StoreUnavailableError for a driver error: names the error class, never the URL."""
    original = getattr(exc, "orig", None) or exc
    return StoreUnavailableError(f"the database is unavailable: {type(original).__name__}")


@contextmanager
def unavailable_on_errors() -> Iterator[None]:
    """Turn connection and operational failures into StoreUnavailableError."""
    try:
        yield
    except UNAVAILABLE_ERRORS as exc:
        # Chain the DBAPI error only: SQLAlchemy's wrapper would carry statement parameters
        # (payloads, personal data) into tracebacks.
        raise unavailable_error(exc) from getattr(exc, "orig", None)


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def run_migrations(connection: Connection) -> None:
    """Alembic `upgrade heads` on `connection` (inside the caller's transaction)."""
    config = _alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "heads")


def read_schema_revisions(connection: Connection) -> tuple[frozenset[str], frozenset[str]]:
    """(revisions applied to the database, newest revisions shipped with this version)."""
    applied = MigrationContext.configure(connection).get_current_heads()
    shipped = ScriptDirectory.from_config(_alembic_config()).get_heads()
    return frozenset(applied), frozenset(shipped)


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


def customer_values(customer: CustomerRecord) -> dict[str, Any]:
    """The bound values of the customers upsert."""
    return {
        "stripe_customer_id": customer.stripe_customer_id,
        "email": customer.email,
        "name": customer.name,
        "created": customer.created,
        "metadata": _json(customer.metadata),
        "deleted": customer.deleted,
        "livemode": customer.livemode,
        "watermark": customer.watermark,
    }


def customer_parameter(name: str, n: int, rows: int) -> str:
    """The bound parameter of column `name` of the `n`th record in a customers upsert of
    `rows` records: the bare name for one record (`customer_values` as it is)."""
    return name if rows == 1 else f"{name}_{n}"


class SqlStore(SqlAccessMixin, SqlBillingMixin, SqlFleetMixin):
    """Store over SQLAlchemy Core; subclasses provide transactions and dialect details."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine  # the engine reads (and, on PostgreSQL, writes) go through
        self._wake = WakeUp()
        # The ingest path runs prebuilt statements: building and cache-keying a statement
        # per call costs more than executing it.
        event_columns = [c.name for c in events.c if c.name not in ("id", "received_at")]
        self._insert_event_stmt = (
            self._insert(events)
            .values({name: sa.bindparam(name) for name in event_columns})
            .values(received_at=self._now_expr)
            .on_conflict_do_nothing(index_elements=[events.c.stripe_event_id])
            .returning(events.c.id, events.c.received_at)
        )
        self._event_id_stmt = sa.select(events.c.id).where(
            events.c.stripe_event_id == sa.bindparam("stripe_event_id")
        )
        self._insert_deliveries_stmt = sa.insert(deliveries)
        self._upsert_customer_stmt = self._customers_upsert(1).returning(
            customers.c.stripe_customer_id
        )

    def _customers_upsert(self, rows: int) -> Insert:
        """The customers upsert for `rows` records: parameters named after `customer_values`'
        keys (one record), or with a `_<n>` suffix per record (several)."""
        columns = [c.name for c in customers.c if c.name != "updated_at"]
        records: list[dict[str, Any]] = [
            {name: sa.bindparam(customer_parameter(name, n, rows)) for name in columns}
            | {"updated_at": self._now_expr}
            for n in range(rows)
        ]
        # One record as a plain VALUES: SQLAlchemy caches its compiled form (a multi-row
        # VALUES list it compiles again on every execute; SQLite keeps that SQL text itself).
        insert_customer = self._insert(customers).values(records[0] if rows == 1 else records)
        return insert_customer.on_conflict_do_update(
            index_elements=[customers.c.stripe_customer_id],
            set_={
                name: insert_customer.excluded[name]
                for name in [*columns, "updated_at"]
                if name != "stripe_customer_id"
            },
            # Equal watermarks write: the later fetch of the same moment wins.
            where=customers.c.watermark <= insert_customer.excluded.watermark,
        )

    # Driver hooks -------------------------------------------------------------------------

    @abstractmethod
    def _write(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` in a write transaction, durable when this returns."""

    async def _write_async(self, fn: Callable[[Connection], T]) -> T:
        """`_write` for async callers (a worker thread here; SQLite waits on its writer)."""
        return await anyio.to_thread.run_sync(self._write, fn)

    @abstractmethod
    def _insert(self, table: sa.Table) -> Insert:
        """The dialect's INSERT (with ON CONFLICT support)."""

    @property
    @abstractmethod
    def _now_expr(self) -> sa.ColumnElement[float]:
        """SQL for the database clock in Unix seconds."""

    def _lock_due(self, stmt: sa.Select[Any]) -> sa.Select[Any]:
        """Lock the selected due rows for the claim (PostgreSQL: SKIP LOCKED)."""
        return stmt

    def _on_work_created(self, conn: Connection) -> None:
        """Called inside a transaction that made deliveries due (PostgreSQL: NOTIFY)."""

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
        self._wake.notify()

    # Ingest -------------------------------------------------------------------------------

    def ingest(
        self,
        event: NewEvent,
        deliveries: Sequence[NewDelivery],
        customer: CustomerRecord | None = None,
        retry_window: float = 259_200.0,
        billing: Sequence[BillingRow] = (),
    ) -> IngestResult:
        job = self._ingest_job(event, deliveries, customer, retry_window, billing)
        return self._ingested(self._write(job), deliveries)

    async def ingest_async(
        self,
        event: NewEvent,
        deliveries: Sequence[NewDelivery],
        customer: CustomerRecord | None = None,
        retry_window: float = 259_200.0,
        billing: Sequence[BillingRow] = (),
    ) -> IngestResult:
        job = self._ingest_job(event, deliveries, customer, retry_window, billing)
        return self._ingested(await self._write_async(job), deliveries)

    def _ingest_job(
        self,
        event: NewEvent,
        deliveries: Sequence[NewDelivery],
        customer: CustomerRecord | None,
        retry_window: float,
        billing: Sequence[BillingRow],
    ) -> Callable[[Connection], IngestResult]:
        def ingest(conn: Connection) -> IngestResult:
            result = self._ingest_tx(conn, event, deliveries, customer, retry_window)
            if result.inserted and billing:
                self._apply_billing_tx(conn, billing)
            return result

        return ingest

    def _ingested(self, result: IngestResult, deliveries: Sequence[NewDelivery]) -> IngestResult:
        if result.inserted and any(d.status in DUE_STATUSES for d in deliveries):
            self._wake.notify()
        return result

    def _ingest_tx(
        self,
        conn: Connection,
        event: NewEvent,
        new_deliveries: Sequence[NewDelivery],
        customer: CustomerRecord | None,
        retry_window: float,
    ) -> IngestResult:
        row = conn.execute(
            self._insert_event_stmt,
            {
                "stripe_event_id": event.stripe_event_id,
                "type": event.type,
                "livemode": event.livemode,
                "created": event.created,
                "api_version": event.api_version,
                "account": event.account,
                "object_id": event.object_id,
                "customer_id": event.customer_id,
                "email": event.email,
                "payload": event.payload,
                "source": event.source,
            },
        ).first()
        if row is None:
            existing = conn.execute(
                self._event_id_stmt, {"stripe_event_id": event.stripe_event_id}
            ).scalar_one()
            return IngestResult(inserted=False, event_id=int(existing), deliveries=0)
        event_id, now = int(row[0]), float(row[1])
        if new_deliveries:
            conn.execute(
                self._insert_deliveries_stmt,
                [
                    {
                        "event_id": event_id,
                        "stripe_event_id": event.stripe_event_id,
                        "workflow_id": nd.workflow_id,
                        "action_index": nd.action_index,
                        "action_type": nd.action_type,
                        "status": nd.status,
                        "attempt_count": 0,
                        "next_attempt_at": now if nd.status in DUE_STATUSES else None,
                        "lease_until": None,
                        "claim_id": None,
                        "deadline_at": now + retry_window,
                        "last_error": nd.reason,
                        "force": False,
                        "sent_ok": False,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for nd in new_deliveries
                ],
            )
            if any(nd.status in DUE_STATUSES for nd in new_deliveries):
                self._on_work_created(conn)
        if customer is not None:
            self._upsert_customer_tx(conn, customer)
        return IngestResult(inserted=True, event_id=event_id, deliveries=len(new_deliveries))

    # The queue ----------------------------------------------------------------------------

    def claim_due(self, worker_id: str, limit: int, lease_seconds: float) -> list[ClaimedDelivery]:
        if limit <= 0:
            return []
        return self._write(lambda conn: self._claim_tx(conn, limit, lease_seconds))

    def _claim_tx(
        self, conn: Connection, limit: int, lease_seconds: float
    ) -> list[ClaimedDelivery]:
        now = self._db_now(conn)
        # A claimed delivery's next_attempt_at is its lease end, so "due" covers both
        # never-claimed rows and expired leases, and the (status, next_attempt_at) index
        # serves the whole query.
        due = (
            sa.select(deliveries.c.id)
            .where(deliveries.c.status.in_(DUE_STATUSES), deliveries.c.next_attempt_at <= now)
            .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
            .limit(limit)
        )
        ids = [int(i) for i in conn.execute(self._lock_due(due)).scalars().all()]
        if not ids:
            return []
        token = uuid.uuid4().hex  # fresh per claim; the row id makes each claim_id unique
        lease_until = now + lease_seconds
        claimed = list(
            conn.execute(
                sa.update(deliveries)
                .where(deliveries.c.id.in_(ids))
                .values(
                    claim_id=sa.literal(token + "-") + sa.cast(deliveries.c.id, sa.String),
                    lease_until=lease_until,
                    next_attempt_at=lease_until,
                    updated_at=now,
                )
                .returning(*queries.CLAIM_COLUMNS)
            ).all()
        )
        event_ids = {row.event_id for row in claimed}
        event_rows = {
            row.id: row
            for row in conn.execute(
                sa.select(*queries.CLAIM_EVENT_COLUMNS).where(events.c.id.in_(event_ids))
            )
        }
        order = {delivery_id: position for position, delivery_id in enumerate(ids)}
        claimed.sort(key=lambda row: order[row.id])
        return [queries.claimed_delivery(row, event_rows[row.event_id]) for row in claimed]

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
        values = self._completed_values(status, error, counted=attempt is not None, sent_ok=sent_ok)
        return self._write(
            lambda conn: self._finish_tx(conn, delivery_id, claim_id, values, attempt)
        )

    def reschedule(
        self,
        delivery_id: int,
        claim_id: str,
        delay_seconds: float,
        attempt: AttemptRecord,
        *,
        error: str | None = None,
    ) -> bool:
        values = self._rescheduled_values(delay_seconds, error)
        return self._write(
            lambda conn: self._finish_tx(conn, delivery_id, claim_id, values, attempt)
        )

    def finish_many(self, completions: Sequence[Completion]) -> list[bool]:
        plans = [
            (
                completion,
                self._rescheduled_values(completion.retry_in or 0.0, completion.error)
                if completion.status is None
                else self._completed_values(
                    completion.status, completion.error, counted=True, sent_ok=completion.sent_ok
                ),
            )
            for completion in completions
        ]

        def finish(conn: Connection) -> list[bool]:
            # Every attempt happened, whoever owns the delivery now: one multi-row insert.
            conn.execute(
                sa.insert(attempts),
                [queries.attempt_values(c.delivery_id, c.attempt) for c, _ in plans],
            )
            return [self._fenced_update(conn, c.delivery_id, c.claim_id, v) for c, v in plans]

        if not plans:
            return []
        return self._write(finish)

    def _completed_values(
        self, status: DeliveryStatus, error: str | None, *, counted: bool, sent_ok: bool | None
    ) -> dict[str, Any]:
        if status not in FINAL_STATUSES:
            raise ValueError(f"complete() takes a final status, not {status!r}")
        values: dict[str, Any] = {
            "status": status,
            "next_attempt_at": None,
            "lease_until": None,
            "claim_id": None,
            "last_error": error,
            "force": False,
            "updated_at": self._now_expr,
        }
        if counted:
            values["attempt_count"] = deliveries.c.attempt_count + 1
        if sent_ok:  # a 2xx once seen stays seen
            values["sent_ok"] = True
        return values

    def _rescheduled_values(self, delay_seconds: float, error: str | None) -> dict[str, Any]:
        return {
            "status": "retrying",
            "next_attempt_at": self._now_expr + max(delay_seconds, 0.0),
            "lease_until": None,
            "claim_id": None,
            "last_error": error,
            "attempt_count": deliveries.c.attempt_count + 1,
            "updated_at": self._now_expr,
        }

    def extend_lease(self, delivery_id: int, claim_id: str, lease_seconds: float) -> bool:
        until = self._now_expr + lease_seconds
        values: dict[str, Any] = {"lease_until": until, "next_attempt_at": until}
        return self._write(lambda conn: self._finish_tx(conn, delivery_id, claim_id, values, None))

    def _finish_tx(
        self,
        conn: Connection,
        delivery_id: int,
        claim_id: str,
        values: dict[str, Any],
        attempt: AttemptRecord | None,
    ) -> bool:
        if attempt is not None:  # it happened, whoever owns the delivery now
            conn.execute(sa.insert(attempts).values(queries.attempt_values(delivery_id, attempt)))
        return self._fenced_update(conn, delivery_id, claim_id, values)

    @staticmethod
    def _fenced_update(
        conn: Connection, delivery_id: int, claim_id: str, values: dict[str, Any]
    ) -> bool:
        """Change the delivery only while `claim_id` still owns it (the fencing token)."""
        fenced = (
            sa.update(deliveries)
            .where(
                deliveries.c.id == delivery_id,
                deliveries.c.claim_id == claim_id,
                deliveries.c.status.in_(DUE_STATUSES),
            )
            .values(values)
        )
        return conn.execute(fenced).rowcount == 1

    # Replay -------------------------------------------------------------------------------

    def replay_event(
        self, stripe_event_id: str, *, force: bool = False, retry_window: float = 259_200.0
    ) -> list[int]:
        def replay(conn: Connection) -> list[int]:
            event_id = conn.execute(
                sa.select(events.c.id).where(events.c.stripe_event_id == stripe_event_id)
            ).scalar_one_or_none()
            if event_id is None:
                raise KeyError(stripe_event_id)
            where = [deliveries.c.event_id == event_id]
            if not force:
                where.append(deliveries.c.sent_ok.is_(False))
            return self._reset_tx(conn, where, force, retry_window)

        reset = self._write(replay)
        if reset:
            self._wake.notify()
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
        matching = sa.select(events.c.id).where(*conditions)
        where = [
            deliveries.c.status == "failed",
            # A failed non-idempotent send that once got a 2xx needs replay_event(force=True).
            deliveries.c.sent_ok.is_(False),
            deliveries.c.event_id.in_(matching),
        ]
        reset = self._write(lambda conn: self._reset_tx(conn, where, False, retry_window))
        if reset:
            self._wake.notify()
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
        ids = sorted(int(i) for i in conn.execute(stmt).scalars())
        if ids:
            self._on_work_created(conn)
        return ids

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
        return self._write(lambda conn: self._upsert_customer_tx(conn, customer))

    def _upsert_customer_tx(self, conn: Connection, customer: CustomerRecord) -> bool:
        values = customer_values(customer)
        return conn.execute(self._upsert_customer_stmt, values).first() is not None

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
