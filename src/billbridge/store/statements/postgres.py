"""The named statements for PostgreSQL (`%s` parameters; JSON rows read with
`json_to_recordset`, events as binary column arrays), the same names as `sqlite.py` (a
test checks).

Results of many rows come back as one JSON text row (`json_agg(...)::text`), as on SQLite,
except claimed deliveries, which carry their payloads and come back as rows (`Rows`).
"""

# ruff: noqa: S608 - static SQL over our own table and column names; values are parameters

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from billbridge.store.statements import Columns, Rows, Statement, guarded_conflict
from billbridge.store.tables import attempts, customers, events
from billbridge.store.tables_billing import BILLING_TABLES

NOW = "CAST(extract(epoch from clock_timestamp()) AS double precision)"
DUE = "('pending', 'retrying')"
PERSON_KEY = "COALESCE(customer_id, lower(email))"
# The transaction-level advisory lock that serialises claims (an arbitrary constant).
CLAIM_LOCK_KEY = 0x62622D636C61696D
KEPT = ("customer_id", "account", "livemode", "created")
STICKY = ("deleted", "payment_failed")
COMMON = ("id", "customer_id", "account", "livemode", "created", "watermark", "order_key")
_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


def _record(table: sa.Table, columns: tuple[str, ...]) -> str:
    """The column definition list of `json_to_recordset` for `columns` of `table`."""
    return ", ".join(f"{c} {table.c[c].type.compile(dialect=_DIALECT)}" for c in columns)


def _arrays(table: sa.Table, columns: tuple[str, ...]) -> str:
    """One binary array parameter per column of `table`, of the column's type. Strings
    stay `text`: an explicit cast to `varchar(n)` would cut a longer value silently, where
    the INSERT's own assignment refuses it."""

    def element(column: sa.Column[Any]) -> str:
        if isinstance(column.type, sa.String):
            return "text"
        return str(column.type.compile(dialect=_DIALECT))

    return ", ".join(f"%b::{element(table.c[c])}[]" for c in columns)


def _agg(expression: str) -> str:
    return f"COALESCE(json_agg({expression}), '[]')::text"


def _in_ids(column: str, cast: str = "bigint") -> str:
    """`column` is one of the ids of a JSON array parameter. Written as `= ANY(ARRAY(...))`,
    not `IN (SELECT ...)`: the planner estimates a set-returning function at 100 rows, so
    a semi-join against a table of a few thousand rows becomes a sequential scan of the
    table, growing with it; an array is looked up through the column's index. (A plan
    cached while the table was empty may still scan it until the next autoanalyze.)"""
    return (
        f"{column} = ANY(ARRAY(SELECT value::{cast}"
        " FROM json_array_elements_text(%s::json) AS value))"
    )


def _billing_upsert(table: sa.Table, columns: tuple[str, ...]) -> str:
    name = table.name
    updated = [c for c in columns if c != "id" and c not in STICKY]
    return (
        f"INSERT INTO {name} ({', '.join(columns)}, updated_at)"
        f" SELECT {', '.join('r.' + c for c in columns)}, {NOW}"
        f" FROM json_to_recordset(%s::json) AS r({_record(table, columns)})"
        + guarded_conflict(name, updated, KEPT)
    )


def _columns(table: sa.Table) -> tuple[str, ...]:
    return tuple(c.name for c in table.c if c.name != "updated_at")


def _billing() -> dict[str, str]:
    statements: dict[str, str] = {}
    for table in BILLING_TABLES.values():
        name = table.name
        statements[f"billing_upsert_{name}"] = _billing_upsert(table, _columns(table))
        for flag in STICKY:
            if flag in table.c:
                statements[f"billing_sticky_{name}_{flag}"] = (
                    f"UPDATE {name} SET {flag} = true, updated_at = {NOW}"
                    f" WHERE {_in_ids('id', 'text')} AND {flag} = false"
                )
    customers_table = BILLING_TABLES["customer"]
    statements["billing_upsert_customer_stub"] = _billing_upsert(
        customers_table, (*COMMON, "deleted")
    )
    return statements


_EVENT_COLUMNS = (
    "stripe_event_id",
    "type",
    "livemode",
    "created",
    "api_version",
    "account",
    "object_id",
    "customer_id",
    "email",
    "payload",
    "source",
)
# A new event's deliveries, with what they take from it (see `outbox.ingest_many`).
_DELIVERY = (
    "event_id bigint, stripe_event_id text, workflow_id text, action_index integer,"
    " action_type text, status text, reason text, retry_window double precision,"
    " received_at double precision, person_key text"
)
_DELIVERY_NAMES = ", ".join(column.split()[0] for column in _DELIVERY.split(","))
_CUSTOMER_COLUMNS = tuple(c.name for c in customers.c if c.name != "updated_at")
_ATTEMPT_COLUMNS = tuple(c.name for c in attempts.c if c.name != "id")
_FINISH = (
    "id bigint, claim_id text, status text, retry_in double precision, error text,"
    " final boolean, sent_ok boolean, counted integer"
)

STATEMENTS: dict[str, Statement] = {
    # The claim's clock, taken once the claim lock is held: claims of every process run one
    # at a time (until their transaction ends), and the claim's next statement sees what
    # the previous claim committed (a fresh snapshot under READ COMMITTED). Without it, two
    # claims could take different deliveries of one person (SKIP LOCKED is per row).
    "claim_now": f"SELECT {NOW} FROM pg_advisory_xact_lock({CLAIM_LOCK_KEY})",
    # Ingest ------------------------------------------------------------------------------
    # Sorted by event id: concurrent batches of several processes lock keys in one order.
    # One binary array per column: a payload travels as it is, never escaped into JSON.
    # Returns what the new events' deliveries need, so that storing them reads no table.
    "insert_events": Columns(
        f"INSERT INTO events ({', '.join(_EVENT_COLUMNS)}, received_at)"
        f" SELECT {', '.join('r.' + c for c in _EVENT_COLUMNS)}, {NOW}"
        f" FROM unnest({_arrays(events, _EVENT_COLUMNS)}) AS r({', '.join(_EVENT_COLUMNS)})"
        " ORDER BY r.stripe_event_id ON CONFLICT (stripe_event_id) DO NOTHING"
        f" RETURNING stripe_event_id, id, received_at, {PERSON_KEY}",
        _EVENT_COLUMNS,
    ),
    "event_ids": (
        "SELECT "
        + _agg("json_build_array(stripe_event_id, id)")
        + f" FROM events WHERE {_in_ids('stripe_event_id', 'text')}"
    ),
    "insert_deliveries": (
        "INSERT INTO deliveries (event_id, stripe_event_id, workflow_id, action_index,"
        " action_type, status, attempt_count, next_attempt_at, lease_until, claim_id,"
        " deadline_at, last_error, force, sent_ok, created_at, updated_at, person_key)"
        " SELECT d.event_id, d.stripe_event_id, d.workflow_id, d.action_index, d.action_type,"
        f" d.status, 0, CASE WHEN d.status IN {DUE} THEN d.received_at END, NULL, NULL,"
        " d.received_at + d.retry_window, d.reason, false, false, d.received_at, d.received_at,"
        " d.person_key"
        f" FROM ROWS FROM (json_to_recordset(%s::json) AS ({_DELIVERY})) WITH ORDINALITY"
        f" AS d({_DELIVERY_NAMES}, n) ORDER BY d.n"
    ),
    "upsert_customers": (
        f"INSERT INTO customers ({', '.join(_CUSTOMER_COLUMNS)}, updated_at)"
        f" SELECT {', '.join('r.' + c for c in _CUSTOMER_COLUMNS)}, {NOW}"
        f" FROM json_to_recordset(%s::json) AS r({_record(customers, _CUSTOMER_COLUMNS)})"
        " ON CONFLICT (stripe_customer_id) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in (*_CUSTOMER_COLUMNS[1:], "updated_at"))
        + " WHERE customers.watermark <= excluded.watermark"
    ),
    **_billing(),
    # Claims ------------------------------------------------------------------------------
    # As on SQLite: a person with a delivery under a live claim waits for it. SKIP LOCKED:
    # rows a finish is recording are passed over.
    "claim_due_ids": (
        "WITH p AS (SELECT %s::double precision AS now)"
        " SELECT " + _agg("id ORDER BY next_attempt_at, id") + " FROM (SELECT d.id,"
        " d.next_attempt_at FROM deliveries AS d CROSS JOIN p"
        f" WHERE d.status IN {DUE} AND d.next_attempt_at <= p.now AND (d.person_key IS NULL"
        " OR d.person_key NOT IN (SELECT o.person_key FROM deliveries AS o"
        f" WHERE o.claim_id IS NOT NULL AND o.status IN {DUE} AND o.person_key IS NOT NULL"
        " AND o.lease_until > p.now)) ORDER BY d.next_attempt_at, d.id LIMIT %s"
        " FOR UPDATE OF d SKIP LOCKED) AS due"
    ),
    "claim_mark": (
        "UPDATE deliveries SET claim_id = %s || id::text, lease_until = %s,"
        f" next_attempt_at = %s, updated_at = %s, worker_id = %s WHERE {_in_ids('id')}"
    ),
    # Rows, not JSON: ~60 payloads of 2-20 KB per claim are neither escaped nor re-parsed.
    "claimed": Rows(
        "SELECT d.id, d.claim_id, d.event_id, d.stripe_event_id, d.workflow_id,"
        " d.action_index, d.action_type, d.status, d.attempt_count, d.deadline_at,"
        " d.force, d.sent_ok, e.type, e.livemode, e.created, e.payload"
        f" FROM deliveries AS d JOIN events AS e ON e.id = d.event_id WHERE {_in_ids('d.id')}"
    ),
    # Finishes ----------------------------------------------------------------------------
    "insert_attempts": (
        f"INSERT INTO attempts ({', '.join(_ATTEMPT_COLUMNS)})"
        f" SELECT {', '.join('r.' + c for c in _ATTEMPT_COLUMNS)}"
        f" FROM json_to_recordset(%s::json) AS r({_record(attempts, _ATTEMPT_COLUMNS)})"
    ),
    # Locks the owned rows: nobody reclaims them before finish_owned, in this transaction.
    "owned_claims": (
        "WITH j AS MATERIALIZED (SELECT * FROM json_to_recordset(%s::json)"
        " AS j(id bigint, claim_id text))"
        " SELECT " + _agg("id") + " FROM (SELECT d.id FROM deliveries AS d"
        " JOIN j ON d.id = j.id AND d.claim_id = j.claim_id"
        f" WHERE d.id = ANY(ARRAY(SELECT j.id FROM j)) AND d.status IN {DUE}"
        " FOR UPDATE OF d) AS owned"
    ),
    "finish_owned": (
        f"WITH v AS MATERIALIZED (SELECT * FROM json_to_recordset(%s::json) AS v({_FINISH}))"
        " UPDATE deliveries AS d SET status = v.status,"
        f" next_attempt_at = CASE WHEN v.retry_in IS NULL THEN NULL ELSE {NOW} + v.retry_in END,"
        " lease_until = NULL, claim_id = NULL, worker_id = NULL, last_error = v.error,"
        " force = CASE WHEN v.final THEN false ELSE d.force END,"
        " sent_ok = d.sent_ok OR v.sent_ok, attempt_count = d.attempt_count + v.counted,"
        f" updated_at = {NOW} FROM v WHERE d.id = ANY(ARRAY(SELECT v.id FROM v))"
        f" AND d.id = v.id AND d.claim_id = v.claim_id AND d.status IN {DUE}"
    ),
    # Heartbeats --------------------------------------------------------------------------
    "worker_beat": (
        "INSERT INTO workers (id, host, pid, version, started_at, beat_at, in_flight)"
        f" VALUES (%s, %s, %s, %s, {NOW}, {NOW}, %s) ON CONFLICT (id) DO UPDATE"
        " SET beat_at = excluded.beat_at, in_flight = excluded.in_flight"
    ),
    "workers_silent": (f"SELECT {_agg('id')} FROM workers WHERE beat_at < {NOW} - %s AND id <> %s"),
    "release_claims": (
        # Due again in the place they had when claimed (the claim's time), ahead of what
        # arrived since: a backlog must not delay the takeover.
        f"UPDATE deliveries SET next_attempt_at = LEAST(updated_at, {NOW}), lease_until = {NOW},"
        " worker_id = NULL"
        f" WHERE status IN {DUE} AND next_attempt_at > {NOW} AND claim_id IS NOT NULL"
        f" AND {_in_ids('worker_id', 'text')}"
    ),
    "forget_workers": f"DELETE FROM workers WHERE {_in_ids('id', 'text')}",
    "list_workers": (
        "SELECT "
        + _agg(
            f"json_build_array(id, host, pid, version, started_at, beat_at, in_flight, {NOW})"
            " ORDER BY host, pid, id"
        )
        + f" FROM workers WHERE beat_at >= {NOW} - %s"
    ),
}
