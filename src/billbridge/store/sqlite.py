"""SQLite driver: WAL, synchronous=FULL, and one writer thread that group-commits.

Every write (ingest, claims, completions, replays, ...) becomes a job on a queue. The
writer thread takes whatever jobs are waiting, runs them in one `BEGIN IMMEDIATE`
transaction, commits once (one fsync for the whole batch) and only then resolves each
caller's future: a caller returns when its write is durable. Consecutive webhook ingests of
a batch are written together, in a few multi-row statements (`_ingest_many`). A job that
fails gets its own exception while the rest of the batch commits (the batch is then run
again with each job in its own SAVEPOINT; see `_commit_batch`). One writer also means
claims can never race. Readers use their own pooled connections (WAL: they never block
the writer, nor it them).

    store = SqliteStore("sqlite:///./var/billbridge.db")
    store.migrate()
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import queue
import sqlite3
import threading
import uuid
from collections import namedtuple
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa

try:
    import fcntl
except ImportError:  # not a POSIX system: SQLite's own busy wait alone
    fcntl = None  # type: ignore[assignment]
from sqlalchemy import event
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import NullPool

from billbridge.errors import ConfigurationError, StoreUnavailableError
from billbridge.store.queries import attempt_values, claimed_delivery
from billbridge.store.records import (
    FINAL_STATUSES,
    ClaimedDelivery,
    Completion,
    CustomerRecord,
    IngestResult,
    NewDelivery,
    NewEvent,
)
from billbridge.store.records_billing import BillingRow
from billbridge.store.sql import (
    UNAVAILABLE_ERRORS,
    Insert,
    SqlStore,
    customer_parameter,
    customer_values,
    run_migrations,
    unavailable_error,
    unavailable_on_errors,
)
from billbridge.store.tables_billing import BILLING_TABLES

T = TypeVar("T")
_NAMED = sqlite.dialect(paramstyle="named")  # renders statements with :name parameters

# The SQLite clock as Unix seconds (millisecond resolution).
NOW_SQL = "((julianday('now') - 2440587.5) * 86400.0)"
MAX_BATCH = 512  # jobs per commit; bounds how long one batch holds the write lock

# The ingest hot path in plain SQL on the sqlite3 connection: SQLAlchemy's per-statement
# overhead would otherwise be most of the writer's time (same statements as sql.py's).
EVENTS_PER_STATEMENT = 64  # rows of one multi-row event INSERT (11 parameters each)
# The ids of many events as ONE row (a JSON array of [stripe_event_id, id]): sqlite3 lets
# the GIL go and takes it back for every row a statement returns, and each time back costs
# the writer a wait while the busy event loop holds it.
EVENT_IDS_SQL = (
    "SELECT json_group_array(json_array(stripe_event_id, id)) FROM events"
    " WHERE stripe_event_id IN (SELECT value FROM json_each(?))"
)


@functools.lru_cache(maxsize=EVENTS_PER_STATEMENT)
def insert_events_sql(rows: int) -> str:
    """The events INSERT for `rows` events in one statement (a batch's webhooks together),
    returning nothing (see EVENT_IDS_SQL); a duplicate event id is skipped."""
    values = f"(?, ?, ?, ?, {NOW_SQL}, ?, ?, ?, ?, ?, ?, ?)"
    return (
        "INSERT INTO events (stripe_event_id, type, livemode, created, received_at,"  # noqa: S608
        " api_version, account, object_id, customer_id, email, payload, source)"
        f" VALUES {', '.join([values] * rows)} ON CONFLICT (stripe_event_id) DO NOTHING"
    )


# The deliveries of many events in one statement, each joined to its stored event for its
# id and clock: each element is [stripe_event_id, workflow_id, action_index, action_type,
# status, reason, retry_window].
INSERT_BATCH_DELIVERIES_SQL = (
    "INSERT INTO deliveries (event_id, stripe_event_id, workflow_id, action_index,"
    " action_type, status, attempt_count, next_attempt_at, lease_until, claim_id, deadline_at,"
    " last_error, force, sent_ok, created_at, updated_at)"
    " SELECT e.id, e.stripe_event_id, json_extract(d.value, '$[1]'),"
    " json_extract(d.value, '$[2]'), json_extract(d.value, '$[3]'),"
    " json_extract(d.value, '$[4]'), 0, CASE WHEN json_extract(d.value, '$[4]')"
    " IN ('pending', 'retrying') THEN e.received_at END, NULL, NULL,"
    " e.received_at + json_extract(d.value, '$[6]'), json_extract(d.value, '$[5]'), 0, 0,"
    " e.received_at, e.received_at"
    " FROM json_each(?) AS d JOIN events AS e ON e.stripe_event_id = json_extract(d.value, '$[0]')"
    " ORDER BY d.key"
)
ROWS_PER_UPSERT = 32  # rows of one multi-row customers or billing upsert


# Recording attempts (the worker's hot path), also in plain SQL, a whole finish_many in a few
# steps (each returned row, like each executemany row, costs the writer a turn at the GIL,
# and in `serve` the event loop holds it): attempts in multi-row INSERTs; which completions
# still own their delivery as ONE JSON row; then one UPDATE ... FROM (VALUES ...) for them,
# which serves a completion (final status; clears `force`) and a reschedule (`retrying`,
# due after a delay) alike.
ATTEMPT_COLUMNS = (
    "delivery_id",
    "outcome",
    "started_at",
    "duration_ms",
    "request",
    "response_status",
    "response_body",
    "error",
)
FINISH_ROWS_PER_STATEMENT = 256  # completions per multi-row statement (8 parameters each)
# CROSS JOIN keeps json_each the outer loop: each completion looks its delivery up by id
# (with a plain JOIN the planner scanned every open delivery for each completion).
OWNED_SQL = (
    "SELECT json_group_array(d.id) FROM json_each(?) AS j CROSS JOIN deliveries AS d"
    " ON d.id = json_extract(j.value, '$[0]') AND d.claim_id = json_extract(j.value, '$[1]')"
    " WHERE d.status IN ('pending', 'retrying')"
)


@functools.lru_cache(maxsize=FINISH_ROWS_PER_STATEMENT)
def insert_attempts_sql(rows: int) -> str:
    """The attempts INSERT for `rows` attempts, ? parameters in ATTEMPT_COLUMNS order."""
    values = f"({', '.join('?' * len(ATTEMPT_COLUMNS))})"
    return (
        f"INSERT INTO attempts ({', '.join(ATTEMPT_COLUMNS)})"  # noqa: S608
        f" VALUES {', '.join([values] * rows)}"
    )


@functools.lru_cache(maxsize=FINISH_ROWS_PER_STATEMENT)
def finish_owned_sql(rows: int) -> str:
    """The fenced update of `rows` owned completions: (id, claim_id, status, retry delay or
    NULL, error, final, sent_ok) per row. Touches only a delivery still claimed by that
    claim id and still open."""
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * rows)
    return (
        "UPDATE deliveries SET status = v.column3,"  # noqa: S608
        f" next_attempt_at = CASE WHEN v.column4 IS NULL THEN NULL ELSE {NOW_SQL} + v.column4 END,"
        " lease_until = NULL, claim_id = NULL, last_error = v.column5,"
        " force = CASE WHEN v.column6 THEN 0 ELSE deliveries.force END,"
        " sent_ok = CASE WHEN v.column7 THEN 1 ELSE deliveries.sent_ok END,"
        f" attempt_count = deliveries.attempt_count + 1, updated_at = {NOW_SQL}"
        f" FROM (VALUES {values}) AS v"
        " WHERE deliveries.id = v.column1 AND deliveries.claim_id = v.column2"
        " AND deliveries.status IN ('pending', 'retrying')"
    )


# Claiming (the worker's other hot path), in plain SQL too: the due ids in order, then one
# UPDATE ... RETURNING and one read of their events, the id lists passed as JSON arrays.
# The ids and the events come back as ONE JSON row each (fewer GIL turns, as above).
CLAIM_IDS_SQL = (
    "SELECT json_group_array(id) FROM (SELECT id FROM deliveries"
    " WHERE status IN ('pending', 'retrying') AND next_attempt_at <= ?"
    " ORDER BY next_attempt_at, id LIMIT ?)"
)
CLAIM_SQL = (
    "UPDATE deliveries SET claim_id = ? || CAST(id AS TEXT), lease_until = ?,"
    " next_attempt_at = ?, updated_at = ? WHERE id IN (SELECT value FROM json_each(?))"
    " RETURNING id, claim_id, event_id, stripe_event_id, workflow_id, action_index,"
    " action_type, status, attempt_count, deadline_at, force, sent_ok"
)
# The columns CLAIM_SQL and CLAIM_EVENTS_SQL return, by name (as `queries.claimed_delivery`
# reads them).
_ClaimRow = namedtuple(
    "_ClaimRow",
    "id claim_id event_id stripe_event_id workflow_id action_index action_type status"
    " attempt_count deadline_at force sent_ok",
)
_ClaimEventRow = namedtuple("_ClaimEventRow", "id type livemode created payload")
CLAIM_EVENTS_SQL = (
    "SELECT json_group_array(json_array(id, type, livemode, created, payload)) FROM events"
    " WHERE id IN (SELECT value FROM json_each(?))"
)


class _JobFailed(Exception):
    """A job of an optimistic batch raised: the batch is rolled back and run again."""


@dataclass(frozen=True)
class _Job:
    """A write for the writer thread, and who waits for its result: a thread (`future`)
    or a coroutine on an event loop (`waiter`, set from that loop)."""

    fn: Callable[[Connection], Any]
    future: Future[Any] | None = None
    waiter: asyncio.Future[Any] | None = None
    loop: asyncio.AbstractEventLoop | None = None


@dataclass(frozen=True)
class _Ingest:
    """An ingest job: the writer runs the consecutive ingests of a batch together
    (`SqliteStore._ingest_many`); called on its own (a batch being re-run job by job), it
    is that for one event."""

    store: SqliteStore
    event: NewEvent
    deliveries: Sequence[NewDelivery]
    customer: CustomerRecord | None
    retry_window: float
    billing: Sequence[BillingRow]

    def __call__(self, conn: Connection) -> IngestResult:
        return self.store._ingest_many(conn, [self])[0]


def _settle(outcomes: Sequence[tuple[_Job, Any, BaseException | None]]) -> None:
    """Hand each job its result. Coroutine waiters of one loop are settled together by ONE
    callback on that loop: a webhook's answer costs no extra wake-up of its own."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, Any, BaseException | None]]] = {}
    for job, value, error in outcomes:
        if job.future is not None:
            if error is None:
                job.future.set_result(value)
            else:
                job.future.set_exception(error)
        elif job.loop is not None:
            by_loop.setdefault(job.loop, []).append((job, value, error))
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_waiters, items)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            continue


def _settle_waiters(items: Sequence[tuple[_Job, Any, BaseException | None]]) -> None:
    for job, value, error in items:
        waiter = job.waiter
        if waiter is None or waiter.done():  # the caller was cancelled
            continue
        if error is None:
            waiter.set_result(value)
        else:
            waiter.set_exception(error)


def sqlite_path(database_url: str) -> Path:
    """The database file of a `sqlite:///...` URL; in-memory databases are refused."""
    try:
        url = make_url(database_url)
    except sa.exc.ArgumentError:
        raise ConfigurationError(
            "DATABASE_URL is not a valid SQLAlchemy URL; use sqlite:///path/to/file.db"
        ) from None
    database = url.database or ""
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        raise ConfigurationError(
            "DATABASE_URL: an in-memory SQLite database cannot be shared between the "
            "writer and readers; use a file, e.g. sqlite:///./var/billbridge.db"
        )
    return Path(database)


def _make_engine(database_url: str, *, begin: str, busy_timeout: float, pooled: bool) -> Engine:
    engine = sa.create_engine(
        database_url,
        connect_args={"check_same_thread": False, "timeout": busy_timeout},
        hide_parameters=True,  # an error's message never shows the values (tokens, hashes)
        **({"pool_size": 8, "max_overflow": 56} if pooled else {"poolclass": NullPool}),
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        # Take transaction control away from the sqlite3 module: SQLAlchemy's BEGIN (below)
        # and SAVEPOINTs then mean exactly what they say.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # durable on commit, power loss included
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin)

    return engine


def _open_write_lock(database: Path) -> int | None:
    """The lock file every billbridge process writing `database` takes around each batch
    (`<database>.writelock`), or None where there is no flock or it cannot be created.

    Two processes writing one file (`serve --no-worker` and `worker`, or a CLI command
    beside `serve`) would otherwise meet at SQLite's write lock, whose busy handler sleeps
    1, 2, 5, 10 ... 100 ms between tries: hundreds of ms of tail latency. A blocking flock
    hands over the moment the other process commits.
    """
    if fcntl is None:
        return None
    try:
        return os.open(f"{database}.writelock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return None  # e.g. a read-only directory: SQLite's busy wait still serialises


@contextlib.contextmanager
def _holding(lock: int | None) -> Iterator[None]:
    """Hold the cross-process write lock (a blocking flock; the GIL is free meanwhile)."""
    if lock is None or fcntl is None:
        yield
        return
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)


def _driver(conn: Connection) -> sqlite3.Connection:
    """The sqlite3 connection under a SQLAlchemy one (same transaction)."""
    driver = conn.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)  # noqa: S101 - this driver only
    return driver


class SqliteStore(SqlStore):
    """Store on one SQLite file: a single group-committing writer thread, pooled readers."""

    def __init__(self, database_url: str, *, busy_timeout: float = 5.0) -> None:
        path = sqlite_path(database_url)  # validates
        super().__init__(
            _make_engine(database_url, begin="BEGIN", busy_timeout=busy_timeout, pooled=True)
        )
        # BEGIN IMMEDIATE takes the write lock up front, so another process writing the same
        # file makes us wait (busy_timeout) instead of failing half-way through a batch.
        self._write_engine = _make_engine(
            database_url, begin="BEGIN IMMEDIATE", busy_timeout=busy_timeout, pooled=False
        )
        # The customers upsert (customer.* events) as the same SQL, run on the raw connection.
        self._upsert_customer_sql = str(self._upsert_customer_stmt.compile(dialect=_NAMED))
        self._upsert_many_statements: dict[tuple[str, tuple[str, ...], int], str] = {}
        self._write_lock = _open_write_lock(path)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._submit_lock = threading.Lock()
        self._closed = False
        self._writer = threading.Thread(target=self._run_writer, name="billbridge-sqlite-writer")
        self._writer.daemon = True
        self._writer.start()

    # Driver hooks -------------------------------------------------------------------------

    def _insert(self, table: sa.Table) -> Insert:
        return sqlite.insert(table)

    @property
    def _now_expr(self) -> sa.ColumnElement[float]:
        return sa.literal_column(NOW_SQL, type_=sa.Double())

    def _ingest_job(
        self,
        event: NewEvent,
        deliveries: Sequence[NewDelivery],
        customer: CustomerRecord | None,
        retry_window: float,
        billing: Sequence[BillingRow],
    ) -> Callable[[Connection], IngestResult]:
        return _Ingest(self, event, deliveries, customer, retry_window, billing)

    def _ingest_many(self, conn: Connection, ingests: Sequence[_Ingest]) -> list[IngestResult]:
        """Several ingests in a few statements, each run in one step (no row-by-row
        results): all their events in multi-row INSERTs, all their deliveries in one, their
        customers and billing rows in multi-row upserts. Same rows as ingesting them one at
        a time in order: an event id seen twice is stored once, by its first ingest."""
        driver = _driver(conn)
        first: dict[str, _Ingest] = {}
        for ingest in ingests:
            first.setdefault(ingest.event.stripe_event_id, ingest)
        news = list(first.values())
        try:
            event_ids: dict[str, int] = {}
            fresh: list[tuple[int, int]] = []  # the id ranges (low, high] the INSERTs gave
            for start in range(0, len(news), EVENTS_PER_STATEMENT):
                chunk = news[start : start + EVENTS_PER_STATEMENT]
                parameters: list[Any] = []
                for ingest in chunk:
                    e = ingest.event
                    parameters += (
                        e.stripe_event_id,
                        e.type,
                        e.livemode,
                        e.created,
                        e.api_version,
                        e.account,
                        e.object_id,
                        e.customer_id,
                        e.email,
                        e.payload,
                        e.source,
                    )
                cursor = driver.execute(insert_events_sql(len(chunk)), parameters)
                if cursor.rowcount <= 0 or cursor.lastrowid is None:
                    continue
                # The rows one INSERT adds get consecutive ids, in VALUES order, above every
                # existing one. All of them new (the usual case): those ids are theirs.
                low = cursor.lastrowid - cursor.rowcount
                fresh.append((low, cursor.lastrowid))
                if cursor.rowcount == len(chunk):
                    for offset, ingest in enumerate(chunk, start=1):
                        event_ids[ingest.event.stripe_event_id] = low + offset
            if len(event_ids) < len(first):  # some were stored already: ask for their ids
                wanted = orjson.dumps(list(first)).decode()
                (ids_json,) = driver.execute(EVENT_IDS_SQL, (wanted,)).fetchone()
                event_ids = dict(orjson.loads(ids_json))
            inserted = [
                ingest
                for ingest in news
                if any(low < event_ids[ingest.event.stripe_event_id] <= high for low, high in fresh)
            ]
            due = [
                (
                    ingest.event.stripe_event_id,
                    nd.workflow_id,
                    nd.action_index,
                    nd.action_type,
                    nd.status,
                    nd.reason,
                    ingest.retry_window,
                )
                for ingest in inserted
                for nd in ingest.deliveries
            ]
            if due:
                driver.execute(INSERT_BATCH_DELIVERIES_SQL, (orjson.dumps(due).decode(),))
            self._upsert_customers(driver, [i.customer for i in inserted if i.customer is not None])
        except sqlite3.Error as exc:  # as SQLAlchemy would raise it, without the payloads
            raise sa.exc.DBAPIError.instance(
                "ingest", None, exc, sqlite3.Error, ismulti=False
            ) from exc
        self._apply_billing_many(conn, [row for ingest in inserted for row in ingest.billing])
        stored = set(map(id, inserted))
        return [
            IngestResult(
                inserted=id(ingest) in stored,
                event_id=event_ids[ingest.event.stripe_event_id],
                deliveries=len(ingest.deliveries) if id(ingest) in stored else 0,
            )
            for ingest in ingests
        ]

    def _upsert_customers(
        self, driver: sqlite3.Connection, records: Sequence[CustomerRecord]
    ) -> None:
        """The customers upsert for many records: runs of distinct customers in one
        statement each (a customer seen again starts a new one, so order is kept)."""
        run: list[CustomerRecord] = []
        for record in [*records, None]:
            if run and (
                record is None
                or len(run) == ROWS_PER_UPSERT
                or any(r.stripe_customer_id == record.stripe_customer_id for r in run)
            ):
                parameters = {
                    customer_parameter(name, n, len(run)): value
                    for n, each in enumerate(run)
                    for name, value in customer_values(each).items()
                }
                driver.execute(self._upsert_customers_sql(len(run)), parameters)
                run = []
            if record is not None:
                run.append(record)

    def _upsert_customers_sql(self, rows: int) -> str:
        """sql.py's customers upsert for `rows` records, returning nothing (parameters:
        `customer_parameter`)."""
        key = ("customers", (), rows)
        sql = self._upsert_many_statements.get(key)
        if sql is None:
            sql = str(self._customers_upsert(rows).compile(dialect=_NAMED))
            self._upsert_many_statements[key] = sql
        return sql

    def _apply_billing_many(self, conn: Connection, rows: Sequence[BillingRow]) -> None:
        """`_apply_billing_tx` for many events' rows, with fewer statements: each table's
        rows in their order, consecutive rows of one shape (same columns, distinct ids) in
        one multi-row upsert. Tables are independent, so only the order within one counts."""
        by_kind: dict[str, list[BillingRow]] = {}
        for row in rows:
            by_kind.setdefault(row.kind, []).append(row)
        for kind, kind_rows in by_kind.items():
            table = BILLING_TABLES[kind]
            run: list[tuple[BillingRow, dict[str, Any]]] = []
            for row in kind_rows:
                values = self._row_values(row, table)
                if run and (
                    values.keys() != run[0][1].keys()
                    or any(row.stripe_id == other.stripe_id for other, _ in run)
                    or len(run) == ROWS_PER_UPSERT
                ):
                    self._upsert_run(conn, table, run)
                    run = []
                run.append((row, values))
            if run:
                self._upsert_run(conn, table, run)

    def _upsert_many_sql(self, table: sa.Table, columns: tuple[str, ...], rows: int) -> str:
        """The billing upsert for `rows` rows of `columns`, ? parameters, returning nothing."""
        key = (table.name, columns, rows)
        sql = self._upsert_many_statements.get(key)
        if sql is None:
            values = f"({', '.join('?' * len(columns))}, {NOW_SQL})"
            sql = self._upsert_sql(table, columns, ", ".join([values] * rows), returning=False)
            self._upsert_many_statements[key] = sql
        return sql

    def _upsert_run(
        self, conn: Connection, table: sa.Table, run: list[tuple[BillingRow, dict[str, Any]]]
    ) -> None:
        """Upsert rows of one shape and distinct ids in one statement, then their follow-ups:
        unless every row was written, the customer link for every row that names one (a
        no-op where the upsert wrote: it stored that customer); sticky flags row by row."""
        if len(run) == 1:
            self._apply_row(conn, run[0][0])
            return
        columns = tuple(run[0][1])
        parameters = [values[column] for _, values in run for column in columns]
        links = [[row.stripe_id, row.customer_id] for row, _ in run if row.customer_id is not None]
        driver = _driver(conn)
        try:
            cursor = driver.execute(self._upsert_many_sql(table, columns, len(run)), parameters)
            if links and cursor.rowcount < len(run):  # some row was not written
                driver.execute(self._link_customers_sql(table), (orjson.dumps(links).decode(),))
        except sqlite3.Error as exc:  # as SQLAlchemy would raise it, without the values
            raise sa.exc.DBAPIError.instance(
                "billing", None, exc, sqlite3.Error, ismulti=False
            ) from exc
        for row, _ in run:
            if row.sticky:
                self._after_upsert(conn, row, table, wrote=True)  # the sticky flags only

    def _link_customers_sql(self, table: sa.Table) -> str:
        """Fill in the customer of rows stored without one, for [id, customer_id] pairs."""
        key = (table.name, ("link",), 0)
        sql = self._upsert_many_statements.get(key)
        if sql is None:
            name = table.name
            pairs = (
                "SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS c"
                " FROM json_each(?1)"
            )
            sql = (
                f"UPDATE {name} SET updated_at = {NOW_SQL},"  # noqa: S608
                f" customer_id = (SELECT c FROM ({pairs}) AS p WHERE p.id = {name}.id)"
                # `+customer_id`: look rows up by id, not through the customer_id index
                # (which would walk every row stored without a customer).
                f" WHERE +customer_id IS NULL AND id IN (SELECT id FROM ({pairs}))"
            )
            self._upsert_many_statements[key] = sql
        return sql

    def _claim_tx(
        self, conn: Connection, limit: int, lease_seconds: float
    ) -> list[ClaimedDelivery]:
        driver = _driver(conn)
        try:
            (now,) = driver.execute(f"SELECT {NOW_SQL}").fetchone()
            (ids_json,) = driver.execute(CLAIM_IDS_SQL, (now, limit)).fetchone()
            ids: list[int] = orjson.loads(ids_json)
            if not ids:
                return []
            token = uuid.uuid4().hex + "-"  # fresh per claim; the row id makes each unique
            lease_until = now + lease_seconds
            claimed = {
                row[0]: row
                for row in driver.execute(
                    CLAIM_SQL, (token, lease_until, lease_until, now, ids_json)
                ).fetchall()
            }
            event_ids = json.dumps(sorted({row[2] for row in claimed.values()}))
            (events_json,) = driver.execute(CLAIM_EVENTS_SQL, (event_ids,)).fetchone()
            event_rows = {row[0]: row for row in orjson.loads(events_json)}
        except sqlite3.Error as exc:  # as SQLAlchemy would raise it
            raise sa.exc.DBAPIError.instance(
                "claim", None, exc, sqlite3.Error, ismulti=False
            ) from exc
        rows = [_ClaimRow(*claimed[delivery_id]) for delivery_id in ids]  # due order
        return [claimed_delivery(row, _ClaimEventRow(*event_rows[row.event_id])) for row in rows]

    def _upsert_customer_tx(self, conn: Connection, customer: CustomerRecord) -> bool:
        try:
            cursor = _driver(conn).execute(self._upsert_customer_sql, customer_values(customer))
            return cursor.fetchone() is not None
        except sqlite3.Error as exc:  # as SQLAlchemy would raise it, without the values
            raise sa.exc.DBAPIError.instance(
                "customer", None, exc, sqlite3.Error, ismulti=False
            ) from exc

    def _run_text(
        self,
        conn: Connection,
        statement: sa.TextClause,
        parameters: dict[str, Any],
        *,
        returns_row: bool = False,
    ) -> bool:
        # sqlite3 takes the same `:name` parameters; SQLAlchemy's execution path costs more
        # than these small writes on the ingest hot path.
        try:
            cursor = _driver(conn).execute(statement.text, parameters)
            return cursor.fetchone() is not None if returns_row else cursor.rowcount > 0
        except sqlite3.Error as exc:  # as SQLAlchemy would raise it, without the parameters
            raise sa.exc.DBAPIError.instance(
                "billing", None, exc, sqlite3.Error, ismulti=False
            ) from exc

    def finish_many(self, completions: Sequence[Completion]) -> list[bool]:
        for completion in completions:
            if completion.status is not None and completion.status not in FINAL_STATUSES:
                raise ValueError(f"a completion takes a final status, not {completion.status!r}")
        if not completions:
            return []

        if len({c.delivery_id for c in completions}) == len(completions):
            return self._write(lambda conn: self._finish_together(conn, completions))

        def one_by_one(conn: Connection) -> list[bool]:
            # A delivery named twice: in order, so the later completion sees the earlier one.
            return [owned for c in completions for owned in self._finish_together(conn, [c])]

        return self._write(one_by_one)

    @staticmethod
    def _finish_together(conn: Connection, completions: Sequence[Completion]) -> list[bool]:
        """`finish_many` for completions of distinct deliveries, in a few statement steps
        whatever their number (see OWNED_SQL). Each attempt is appended; each delivery is
        updated only if its completion's claim still owns it."""
        driver = _driver(conn)
        try:
            for start in range(0, len(completions), FINISH_ROWS_PER_STATEMENT):
                chunk = completions[start : start + FINISH_ROWS_PER_STATEMENT]
                attempts: list[Any] = []
                for c in chunk:
                    values = attempt_values(c.delivery_id, c.attempt)
                    attempts += [values[column] for column in ATTEMPT_COLUMNS]
                driver.execute(insert_attempts_sql(len(chunk)), attempts)
            claims = orjson.dumps([[c.delivery_id, c.claim_id] for c in completions]).decode()
            (owned_json,) = driver.execute(OWNED_SQL, (claims,)).fetchone()
            owned_ids = set(orjson.loads(owned_json))
            owned = [c for c in completions if c.delivery_id in owned_ids]
            for start in range(0, len(owned), FINISH_ROWS_PER_STATEMENT):
                chunk = owned[start : start + FINISH_ROWS_PER_STATEMENT]
                rows: list[Any] = []
                for c in chunk:
                    retry = c.status is None
                    rows += (
                        c.delivery_id,
                        c.claim_id,
                        "retrying" if retry else c.status,
                        max(c.retry_in or 0.0, 0.0) if retry else None,
                        c.error,
                        not retry,
                        bool(c.sent_ok),
                    )
                driver.execute(finish_owned_sql(len(chunk)), rows)
        except sqlite3.Error as exc:  # as SQLAlchemy would raise it, without the values
            raise sa.exc.DBAPIError.instance(
                "finish", None, exc, sqlite3.Error, ismulti=False
            ) from exc
        return [c.delivery_id in owned_ids for c in completions]

    def _write(self, fn: Callable[[Connection], T]) -> T:
        future: Future[T] = Future()
        self._submit(_Job(fn, future=future))
        return future.result()

    async def _write_async(self, fn: Callable[[Connection], T]) -> T:
        # Wait from the event loop itself: no worker thread per webhook.
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = loop.create_future()
        self._submit(_Job(fn, waiter=waiter, loop=loop))
        return await waiter

    def _submit(self, job: _Job) -> None:
        with self._submit_lock:
            if self._closed:
                raise StoreUnavailableError("the store is closed")
            self._jobs.put(job)

    # Lifecycle ----------------------------------------------------------------------------

    def migrate(self) -> None:
        with unavailable_on_errors(), self._write_engine.begin() as conn:
            run_migrations(conn)

    def close(self) -> None:
        with self._submit_lock:
            if self._closed:
                return
            self._closed = True
            self._jobs.put(None)  # after every job already queued
        self._writer.join()
        self._write_engine.dispose()
        self._engine.dispose()
        if self._write_lock is not None:
            os.close(self._write_lock)

    # The writer thread --------------------------------------------------------------------

    def _run_writer(self) -> None:
        conn: Connection | None = None
        stopping = False
        try:
            while not stopping:
                first = self._jobs.get()
                if first is None:
                    break
                batch = [first]
                while len(batch) < MAX_BATCH:
                    try:
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        stopping = True
                        break
                    batch.append(job)
                conn = self._commit_batch(conn, batch)
        finally:
            if conn is not None:
                conn.close()
            self._fail_leftovers()

    def _commit_batch(self, conn: Connection | None, batch: list[_Job]) -> Connection | None:
        """Run `batch` in one transaction; returns the connection to reuse (None if broken).

        Optimistic first: the jobs run one after the other with no savepoint (each SQL
        statement costs this thread a turn at the GIL, and under load the event loop holds
        it). If one raises, the whole transaction is rolled back and the batch runs again
        with each job in its own SAVEPOINT, so only the failing job is undone.
        """
        live = [
            job for job in batch if job.future is None or job.future.set_running_or_notify_cancel()
        ]
        try:
            if conn is None:
                conn = self._write_engine.connect()
            with _holding(self._write_lock):
                try:
                    outcomes = self._run_jobs(conn, live, isolated=False)
                except _JobFailed:
                    outcomes = self._run_jobs(conn, live, isolated=True)
        except Exception as exc:
            # Nothing of this batch is durable: every caller hears so.
            failure = unavailable_error(exc)
            _settle([(job, None, failure) for job in live])
            if conn is not None:
                try:
                    conn.invalidate()
                    conn.close()
                except Exception:  # noqa: S110 - already reporting the real failure
                    pass
            return None
        _settle(outcomes)
        return conn

    def _run_jobs(
        self, conn: Connection, jobs: list[_Job], *, isolated: bool
    ) -> list[tuple[_Job, Any, BaseException | None]]:
        """Run `jobs` in one transaction and commit. Not `isolated`: consecutive ingests run
        together (`_ingest_many`), and the first failure raises `_JobFailed` (and nothing is
        kept). `isolated`: each job in a SAVEPOINT straight on the sqlite3 connection
        (SQLAlchemy's begin_nested() costs more than the ingest it wraps); a failing job is
        rolled back alone and gets its exception."""
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        with conn.begin():
            driver = _driver(conn)
            if not isolated:
                try:
                    self._run_optimistic(conn, jobs, outcomes)
                except Exception as exc:
                    raise _JobFailed from exc
                return outcomes
            for job in jobs:
                driver.execute("SAVEPOINT job")
                try:
                    value = job.fn(conn)
                except Exception as exc:
                    driver.execute("ROLLBACK TO job")
                    driver.execute("RELEASE job")
                    if isinstance(exc, UNAVAILABLE_ERRORS):
                        exc = unavailable_error(exc)
                    outcomes.append((job, None, exc))
                else:
                    driver.execute("RELEASE job")
                    outcomes.append((job, value, None))
        return outcomes

    def _run_optimistic(
        self,
        conn: Connection,
        jobs: list[_Job],
        outcomes: list[tuple[_Job, Any, BaseException | None]],
    ) -> None:
        """Run `jobs` in order, each run of consecutive ingests as one `_ingest_many`."""
        start = 0
        while start < len(jobs):
            end = start
            while end < len(jobs) and isinstance(jobs[end].fn, _Ingest):
                end += 1
            if end > start:
                run = jobs[start:end]
                ingests = [job.fn for job in run if isinstance(job.fn, _Ingest)]
                results = self._ingest_many(conn, ingests)
                outcomes.extend(
                    (job, result, None) for job, result in zip(run, results, strict=True)
                )
                start = end
                continue
            job = jobs[start]
            outcomes.append((job, job.fn(conn), None))
            start += 1

    def _fail_leftovers(self) -> None:
        with self._submit_lock:
            self._closed = True
        leftovers: list[tuple[_Job, Any, BaseException | None]] = []
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None and (
                job.future is None or job.future.set_running_or_notify_cancel()
            ):
                leftovers.append((job, None, StoreUnavailableError("the store is closed")))
        _settle(leftovers)
