"""The outbox's batched write paths, written once for both drivers over named statements.

Ingest of many events (with their deliveries, customers and billing rows), claims,
finishes, the customer and billing upserts and worker heartbeats: each is a fixed few
statements per call whatever the batch size, rows passed as one JSON text parameter (or,
where the dialect binds them faster, one VALUES list or one array per column: see
`store/statements`). A driver hands these functions a `Db`: its dialect's statements on
the DB-API connection of the transaction it runs (and commits) itself.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import orjson
import sqlalchemy as sa

from billbridge.compact_json import compact_json_text
from billbridge.errors import StoreUnavailableError
from billbridge.store.queries import attempt_values
from billbridge.store.records import (
    DUE_STATUSES,
    AttemptRecord,
    ClaimedDelivery,
    CustomerRecord,
    DeliveryStatus,
    IngestResult,
    NewDelivery,
    NewEvent,
    WorkerInfo,
    WorkerRecord,
)
from billbridge.store.records_billing import BillingRow, DiscoveredFacts
from billbridge.store.statements import Statements
from billbridge.store.tables_billing import BILLING_TABLES, JSON_COLUMNS

# Flags that only ever rise (a customer deleted, an invoice that once failed): set by any
# snapshot that has them, whatever its order, and never cleared by the guarded upsert.
STICKY_COLUMNS = frozenset({"deleted", "payment_failed"})
# Appended to the error of an attempt recorded after its claim passed to another worker.
FENCED_OUT = "refused: the claim had passed to another worker (outcome not applied)"
# Events stored by one insert_events statement (SQLite binds 11 parameters each, under its
# 32,766 limit; event_ids reads what that ONE statement inserted). The writer's batches
# are at most 512 jobs anyway.
INGESTS_PER_STATEMENT = 512
MAX_PARAMETERS = 32_000  # bound parameters of one statement (SQLite's limit is 32,766)
T = TypeVar("T")
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


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class Db:
    """Named statements on one DB-API connection, inside the caller's transaction.

    A driver error becomes SQLAlchemy's exception of the same kind (IntegrityError,
    OperationalError, ...) naming the statement, never its parameters (payloads). With
    `pipelined` (psycopg), the statements of a `batch()` go out without waiting for each
    other's answers: `send` never waits, `run` and `value` wait for what was sent so far,
    so a batch costs a round trip per result the algorithm reads, not per statement."""

    def __init__(
        self,
        statements: Statements,
        connection: Any,
        errors: type[Exception],
        *,
        pipelined: bool = False,
    ) -> None:
        self._statements = statements
        self._connection = connection
        self._errors = errors
        self.pipelined = pipelined
        self._pipeline: Any = None

    def _error(self, name: str, exc: Exception) -> sa.exc.StatementError:
        return sa.exc.DBAPIError.instance(name, None, exc, self._errors, ismulti=False)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Send what runs inside together (where the driver can); an error of a statement
        sent along surfaces at the latest here."""
        if not self.pipelined or self._pipeline is not None:
            yield
            return
        try:
            with self._connection.pipeline() as pipeline:
                self._pipeline = pipeline
                yield
        except self._errors as exc:
            raise self._error("batch", exc) from exc
        finally:
            self._pipeline = None

    def _execute(self, name: str, parameters: Sequence[Any], rows: int = 1) -> Any:
        return self._driver_call(
            name, self._connection.execute, self._statements.sql(name, rows), parameters
        )

    def _driver_call(self, name: str, call: Callable[..., T], *arguments: Any) -> T:
        """`call(*arguments)`, a driver error becoming SQLAlchemy's naming `name`."""
        try:
            return call(*arguments)
        except self._errors as exc:
            raise self._error(name, exc) from exc

    def send(self, name: str, *parameters: Any) -> None:
        """Execute; nothing is read back (in a pipelined batch, nothing is waited for)."""
        self._execute(name, parameters)

    def send_rows(self, name: str, rows: Sequence[dict[str, Any]]) -> None:
        """Execute `name` over `rows` in ONE statement: as one JSON parameter, or where the
        dialect's statement is a `MultiRow`, as a VALUES list, or a `Columns`, as one array
        per column."""
        self._execute_rows(name, rows)

    def returned_rows(self, name: str, rows: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
        """`send_rows`, and the rows its RETURNING clause returned (in no given order)."""
        returned: list[tuple[Any, ...]] = []
        for cursor in self._execute_rows(name, rows):
            returned.extend(self._driver_call(name, cursor.fetchall))
        return returned

    def _execute_rows(self, name: str, rows: Sequence[dict[str, Any]]) -> list[Any]:
        """The cursors of `name` executed over `rows` (one, or one per VALUES chunk)."""
        columns = self._statements.columns(name)
        if columns is not None:
            parameters = [[row[column] for row in rows] for column in columns.columns]
            return [self._execute(name, parameters)]
        multirow = self._statements.multirow(name)
        if multirow is None:
            return [self._execute(name, (_dumps(rows),))]
        cursors = []
        per_statement = MAX_PARAMETERS // len(multirow.columns)
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            parameters = [row[column] for row in chunk for column in multirow.columns]
            cursors.append(self._execute(name, parameters, len(chunk)))
        return cursors

    def run(self, name: str, *parameters: Any) -> int:
        """Execute; the number of rows it changed."""
        cursor = self._execute(name, parameters)
        if self._pipeline is not None:
            self._driver_call(name, self._pipeline.sync)
        return int(cursor.rowcount)

    def value(self, name: str, *parameters: Any) -> Any:
        """The first column of the one row the statement returns."""
        row = self._driver_call(name, self._execute(name, parameters).fetchone)
        return None if row is None else row[0]

    def rows(self, name: str, *parameters: Any) -> list[Any]:
        """The rows the statement returns: the JSON array it returns as its one value,
        decoded, or where the dialect's statement is a `Rows`, its rows as they come."""
        if not self._statements.returns_rows(name):
            return cast(list[Any], orjson.loads(self.value(name, *parameters)))
        return list(self._driver_call(name, self._execute(name, parameters).fetchall))


# Ingest -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ingest:
    """One event to store with its deliveries, customer snapshot and billing rows."""

    event: NewEvent
    deliveries: Sequence[NewDelivery]
    customer: CustomerRecord | None
    retry_window: float
    billing: Sequence[BillingRow]


def ingest_many(db: Db, ingests: Sequence[Ingest]) -> list[IngestResult]:
    """Store several ingests in a few statements: their events, then the deliveries of the
    new ones, their customers and their billing rows. Same rows as ingesting them one at a
    time in order: an event id seen twice is stored once, by its first ingest."""
    if len(ingests) > INGESTS_PER_STATEMENT:
        head, tail = ingests[:INGESTS_PER_STATEMENT], ingests[INGESTS_PER_STATEMENT:]
        return ingest_many(db, head) + ingest_many(db, tail)
    first: dict[str, Ingest] = {}
    for ingest in ingests:
        first.setdefault(ingest.event.stripe_event_id, ingest)
    news = list(first.values())
    with db.batch():
        # The events this statement stored: id, received_at and person key, all that their
        # deliveries take from them, so storing those reads no table.
        stored = {
            sid: (int(row_id), received_at, person_key)
            for sid, row_id, received_at, person_key in db.returned_rows(
                "insert_events", [_event_row(ingest.event) for ingest in news]
            )
        }
        # Ids already stored before (a redelivery): only their row ids are read.
        known = [sid for sid in first if sid not in stored]
        existing = (
            {sid: int(row_id) for sid, row_id in db.rows("event_ids", _dumps(known))}
            if known
            else {}
        )
        inserted = [ingest for ingest in news if ingest.event.stripe_event_id in stored]
        deliveries: list[dict[str, Any]] = []
        for ingest in inserted:
            event_id, received_at, person_key = stored[ingest.event.stripe_event_id]
            deliveries.extend(
                {
                    "event_id": event_id,
                    "stripe_event_id": ingest.event.stripe_event_id,
                    "workflow_id": nd.workflow_id,
                    "action_index": nd.action_index,
                    "action_type": nd.action_type,
                    "status": nd.status,
                    "reason": nd.reason,
                    "retry_window": ingest.retry_window,
                    "received_at": received_at,
                    "person_key": person_key,
                }
                for nd in ingest.deliveries
            )
        if deliveries:
            db.send_rows("insert_deliveries", deliveries)
        upsert_customers(
            db, [i.customer for i in inserted if i.customer is not None], counted=False
        )
        apply_billing(db, [row for ingest in inserted for row in ingest.billing], counted=False)
    results = []
    for ingest in ingests:
        sid = ingest.event.stripe_event_id
        new = sid in stored and ingest is first[sid]
        results.append(
            IngestResult(
                inserted=new,
                event_id=stored[sid][0] if sid in stored else existing[sid],
                deliveries=len(ingest.deliveries) if new else 0,
            )
        )
    return results


def makes_work(ingests: Iterable[Ingest], results: Iterable[IngestResult]) -> bool:
    """Whether some stored ingest made a delivery due (workers should be woken)."""
    return any(
        result.inserted and any(d.status in DUE_STATUSES for d in ingest.deliveries)
        for ingest, result in zip(ingests, results, strict=True)
    )


def _event_row(event: NewEvent) -> dict[str, Any]:
    return {
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
    }


def _runs(items: Sequence[Any], key: Callable[[Any], Any]) -> Iterable[list[Any]]:
    """Consecutive items with distinct keys (one statement cannot write a row twice)."""
    run: list[Any] = []
    keys: set[Any] = set()
    for item in items:
        if key(item) in keys:
            yield run
            run, keys = [], set()
        run.append(item)
        keys.add(key(item))
    if run:
        yield run


def upsert_customers(db: Db, records: Sequence[CustomerRecord], *, counted: bool = True) -> int:
    """Upsert customer snapshots in order, unless the stored watermark is newer; returns
    how many were written (not `counted`: 0, and nothing is waited for)."""
    written = 0
    for run in _runs(records, lambda record: record.stripe_customer_id):
        # Distinct ids, so sorted: concurrent transactions lock rows in one order.
        run.sort(key=lambda record: record.stripe_customer_id)
        rows = _dumps([customer_values(c) for c in run])
        if counted:
            written += db.run("upsert_customers", rows)
        else:
            db.send("upsert_customers", rows)
    return written


def customer_values(customer: CustomerRecord) -> dict[str, Any]:
    """The customers row of a snapshot (metadata as JSON text)."""
    return {
        "stripe_customer_id": customer.stripe_customer_id,
        "email": customer.email,
        "name": customer.name,
        "created": customer.created,
        "metadata": compact_json_text(customer.metadata),
        "deleted": customer.deleted,
        "livemode": customer.livemode,
        "watermark": customer.watermark,
    }


# The billing projection -------------------------------------------------------------------


def apply_billing(db: Db, rows: Sequence[BillingRow], *, counted: bool = True) -> bool:
    """Upsert each row unless the stored one has an order_key at least as great; sticky
    flags and a missing customer id are filled in anyway. Tables are independent, so rows
    go table by table, in order within each, runs of distinct ids in one statement.
    Returns whether anything changed (not `counted`: False, and nothing is waited for)."""
    by_kind: dict[str, list[BillingRow]] = {}
    for row in rows:
        by_kind.setdefault(row.kind, []).append(row)
    changed = False
    for kind, kind_rows in by_kind.items():
        table = BILLING_TABLES[kind]
        group: list[tuple[BillingRow, dict[str, Any]]] = []
        for row in kind_rows:
            values = billing_values(row, table)
            if group and (
                _upsert_name(table, values) != _upsert_name(table, group[0][1])
                or any(row.stripe_id == other.stripe_id for other, _ in group)
            ):
                changed = _upsert_group(db, table, group, counted=counted) or changed
                group = []
            group.append((row, values))
        if group:
            changed = _upsert_group(db, table, group, counted=counted) or changed
    return changed


def _upsert_group(
    db: Db, table: sa.Table, group: list[tuple[BillingRow, dict[str, Any]]], *, counted: bool
) -> bool:
    """One guarded upsert for rows of one shape and distinct ids (it also fills in the
    customer of a row stored without one, however old the new row), then the sticky
    flags."""
    name = table.name
    group = sorted(group, key=lambda item: item[0].stripe_id)  # one lock order (distinct ids)
    upsert = _upsert_name(table, group[0][1])
    values = _dumps([values for _, values in group])
    flags = sorted({flag for row, _ in group for flag in row.sticky})
    if not counted and db.pipelined:  # nothing waited for
        db.send(upsert, values)
        for flag in flags:
            ids = [row.stripe_id for row, _ in group if flag in row.sticky]
            db.send(f"billing_sticky_{name}_{flag}", _dumps(ids))
        return False
    changed = db.run(upsert, values) > 0
    for flag in flags:
        ids = [row.stripe_id for row, _ in group if flag in row.sticky]
        changed = db.run(f"billing_sticky_{name}_{flag}", _dumps(ids)) > 0 or changed
    return changed


def _upsert_name(table: sa.Table, values: dict[str, Any]) -> str:
    """The upsert statement for a row with these columns: the table's every column, or (a
    deleted customer's stub) only the common ones."""
    if table.name == "billing_customers" and "email" not in values:
        return "billing_upsert_customer_stub"
    return f"billing_upsert_{table.name}"


def billing_values(row: BillingRow, table: sa.Table) -> dict[str, Any]:
    """The columns the upsert of `row` writes, by name."""
    values: dict[str, Any] = {
        "id": row.stripe_id,
        "customer_id": row.customer_id,
        "account": row.account,
        "livemode": row.livemode,
        "created": row.created,
        "watermark": row.watermark,
        "order_key": row.order_key,
        **{
            # JSON text; a None stays NULL where the column allows it ("null" otherwise)
            key: json.dumps(value, separators=(",", ":"))
            if key in JSON_COLUMNS and (value is not None or not table.c[key].nullable)
            else value
            for key, value in row.values.items()
        },
    }
    for flag in row.sticky:
        values[flag] = True
    for column in table.c:  # flags not named default to false on first insert
        if column.name not in values and column.name != "updated_at" and not column.nullable:
            values[str(column.name)] = False
    return values


def record_facts(db: Db, facts: DiscoveredFacts) -> None:
    """What deciding deliveries learnt from Stripe (customers, projection rows), under
    the same guards as ingest: a customer's watermark, a row's order key."""
    upsert_customers(db, facts.customers)
    apply_billing(db, facts.billing)


# Claims and finishes -----------------------------------------------------------------------


def claim(db: Db, worker_id: str, limit: int, lease_seconds: float) -> list[ClaimedDelivery]:
    """Claim up to `limit` due deliveries, oldest due first: four statements whatever the
    number (the clock, the due ids, the claim, the claimed rows with their events).

    One person, one order: the deliveries of a person (`deliveries.person_key`) with a
    delivery under a live claim wait for that claim, so no two claims hold one person at
    once. The claimed deliveries come in Stripe event order."""
    with db.batch():
        now = float(db.value("claim_now"))
        ids_json = db.value("claim_due_ids", now, limit)
        ids: list[int] = orjson.loads(ids_json)
        if not ids:
            return []
        token = uuid.uuid4().hex + "-"  # fresh per claim; the row id makes each claim_id unique
        lease_until = now + lease_seconds
        db.send("claim_mark", token, lease_until, lease_until, now, worker_id, ids_json)
        claimed = {row[0]: row for row in db.rows("claimed", ids_json)}
    deliveries = [_claimed_delivery(claimed[delivery_id]) for delivery_id in ids]
    # Oldest Stripe event first (stable: due order within one `created`): a batch decides
    # and sends one person's deliveries in the order Stripe made them.
    return sorted(deliveries, key=lambda d: d.event_created)


def _claimed_delivery(row: Sequence[Any]) -> ClaimedDelivery:
    (id_, claim_id, event_id, stripe_event_id, workflow_id, action_index, action_type) = row[:7]
    (status, attempt_count, deadline_at, force, sent_ok, type_, livemode, created) = row[7:15]
    return ClaimedDelivery(
        delivery_id=int(id_),
        claim_id=claim_id,
        event_id=int(event_id),
        stripe_event_id=stripe_event_id,
        event_type=type_,
        livemode=bool(livemode),
        event_created=int(created),
        payload=row[15],
        workflow_id=workflow_id,
        action_index=int(action_index),
        action_type=action_type,
        status=cast(DeliveryStatus, status),
        attempt_count=int(attempt_count),
        deadline_at=float(deadline_at),
        force=bool(force),
        sent_ok=bool(sent_ok),
    )


@dataclass(frozen=True)
class Finish:
    """One attempt's outcome to record: a final `status`, or None to retry after
    `retry_in` seconds; `counted`: whether it adds to the delivery's attempt count."""

    delivery_id: int
    claim_id: str
    status: DeliveryStatus | None
    attempt: AttemptRecord | None
    error: str | None = None
    sent_ok: bool | None = None
    retry_in: float | None = None
    counted: bool = True


def finish(db: Db, finishes: Sequence[Finish], facts: DiscoveredFacts | None = None) -> list[bool]:
    """Record attempts: each is appended (it happened); each delivery changes only while
    its claim still owns it (the fencing token). Returns, for each, whether it owned.
    Distinct deliveries go together in three statements; a delivery named twice makes
    them go one at a time, in order (the later sees the earlier). `facts` learnt while
    deciding them are written first, in the same transaction, owned or not."""
    if facts:
        record_facts(db, facts)
    if not finishes:
        return []
    if len({f.delivery_id for f in finishes}) < len(finishes):
        return [owned for f in finishes for owned in finish_together(db, [f])]
    return finish_together(db, finishes)


def finish_together(db: Db, finishes: Sequence[Finish]) -> list[bool]:
    """`finish` for distinct deliveries: three statements whatever their number. The
    attempt of a completion whose claim no longer owns its delivery is still appended,
    its error saying the outcome was refused (`FENCED_OUT`)."""
    with db.batch():
        claims = [{"id": f.delivery_id, "claim_id": f.claim_id} for f in finishes]
        owned_ids = set(db.rows("owned_claims", _dumps(claims)))
        attempts = [
            _attempt_row(f, fenced=f.delivery_id not in owned_ids) for f in finishes if f.attempt
        ]
        if attempts:
            db.send_rows("insert_attempts", attempts)
        owned = [
            {
                "id": f.delivery_id,
                "claim_id": f.claim_id,
                "status": "retrying" if f.status is None else f.status,
                "retry_in": max(f.retry_in or 0.0, 0.0) if f.status is None else None,
                "error": f.error,
                "final": f.status is not None,
                "sent_ok": bool(f.sent_ok),
                "counted": int(f.counted),
            }
            for f in finishes
            if f.delivery_id in owned_ids
        ]
        if owned:
            db.send_rows("finish_owned", owned)
    return [f.delivery_id in owned_ids for f in finishes]


def _attempt_row(f: Finish, *, fenced: bool) -> dict[str, Any]:
    assert f.attempt is not None  # noqa: S101 - only called for attempts
    row = attempt_values(f.delivery_id, f.attempt)
    if fenced:
        row["error"] = f"{row['error']}; {FENCED_OUT}" if row["error"] else FENCED_OUT
    return row


# Heartbeats ---------------------------------------------------------------------------------


def beat(db: Db, worker: WorkerInfo, in_flight: int, silent_after: float) -> int:
    """Record `worker` alive now, then free the claims of every worker silent for more than
    `silent_after` seconds (due at once; their claim ids stay, so a late finish of the old
    owner is fenced out once someone claims again) and forget those workers. Returns how
    many deliveries were freed."""
    db.run("worker_beat", worker.worker_id, worker.host, worker.pid, worker.version, in_flight)
    silent = db.value("workers_silent", silent_after, worker.worker_id)
    if not orjson.loads(silent):
        return 0
    freed = db.run("release_claims", silent)
    db.run("forget_workers", silent)
    return freed


def retire(db: Db, worker_id: str) -> int:
    """A worker stopping cleanly: free what it still holds and drop its row."""
    ids = _dumps([worker_id])
    freed = db.run("release_claims", ids)
    db.run("forget_workers", ids)
    return freed


def live_workers(db: Db, alive_within: float) -> list[WorkerRecord]:
    """Workers that beat within the last `alive_within` seconds, by host and pid."""
    return [
        WorkerRecord(
            worker_id=worker_id,
            host=host,
            pid=int(pid),
            version=version,
            started_at=float(started_at),
            beat_at=float(beat_at),
            in_flight=int(in_flight),
            silent_for=max(float(now) - float(beat_at), 0.0),
        )
        for worker_id, host, pid, version, started_at, beat_at, in_flight, now in db.rows(
            "list_workers", alive_within
        )
    ]
