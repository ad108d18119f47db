"""The named statements for SQLite (`?` parameters; JSON rows read with `json_each`).

Every name here is defined in `postgres.py` too (a test checks); `store/outbox.py` says
what each receives and returns.
"""

# ruff: noqa: S608 - static SQL over our own table and column names; values are parameters

from __future__ import annotations

import sqlalchemy as sa

from billbridge.store.statements import MultiRow, guarded_conflict
from billbridge.store.tables_billing import BILLING_TABLES

# The SQLite clock as Unix seconds (millisecond resolution).
NOW = "((julianday('now') - 2440587.5) * 86400.0)"
DUE = "('pending', 'retrying')"
# Who a delivery is about, from its event (deliveries.person_key).
PERSON_KEY = "COALESCE(customer_id, lower(email))"

# The billing columns an upsert keeps when the new snapshot has none (COALESCE), and the
# flags only ever raised (never written by the guarded upsert).
KEPT = ("customer_id", "account", "livemode", "created")
STICKY = ("deleted", "payment_failed")
COMMON = ("id", "customer_id", "account", "livemode", "created", "watermark", "order_key")


def _field(name: str, source: str = "value") -> str:
    return f"json_extract({source}, '$.{name}')"


def _billing_upsert(table: sa.Table, columns: tuple[str, ...]) -> str:
    name = table.name
    updated = [c for c in columns if c != "id" and c not in STICKY]
    return (
        f"INSERT INTO {name} ({', '.join(columns)}, updated_at)"
        f" SELECT {', '.join(_field(c) for c in columns)}, {NOW}"
        " FROM json_each(?) WHERE true ORDER BY key" + guarded_conflict(name, updated, KEPT)
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
                    f"UPDATE {name} SET {flag} = 1, updated_at = {NOW}"
                    f" WHERE id IN (SELECT value FROM json_each(?)) AND {flag} = 0"
                )
    # A deleted customer's stub: no fields of its own, so the stored ones stay.
    customers = BILLING_TABLES["customer"]
    statements["billing_upsert_customer_stub"] = _billing_upsert(customers, (*COMMON, "deleted"))
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
_DELIVERY_COLUMNS = (
    "event_id",
    "stripe_event_id",
    "workflow_id",
    "action_index",
    "action_type",
    "status",
    "reason",
    "retry_window",
    "received_at",
    "person_key",
)
_CUSTOMER_COLUMNS = (
    "stripe_customer_id",
    "email",
    "name",
    "created",
    "metadata",
    "deleted",
    "livemode",
    "watermark",
)
_ATTEMPT_COLUMNS = (
    "delivery_id",
    "outcome",
    "started_at",
    "duration_ms",
    "request",
    "response_status",
    "response_body",
    "error",
)


def _ids(parameter: str = "?") -> str:
    return f"(SELECT value FROM json_each({parameter}))"


STATEMENTS: dict[str, str | MultiRow] = {
    # The claim's clock (SQLite: claims are already serialised by the one writer).
    "claim_now": f"SELECT {NOW}",
    # Ingest ------------------------------------------------------------------------------
    # VALUES lists, not JSON: here each JSON field read re-parses its element, payload and
    # all (~10x slower for webhook-sized events).
    "insert_events": MultiRow(
        f"INSERT INTO events ({', '.join(_EVENT_COLUMNS)}, received_at)"
        " VALUES {rows} ON CONFLICT (stripe_event_id) DO NOTHING"
        f" RETURNING stripe_event_id, id, received_at, {PERSON_KEY}",
        f"({', '.join('?' * len(_EVENT_COLUMNS))}, {NOW})",
        _EVENT_COLUMNS,
    ),
    "event_ids": (
        "SELECT json_group_array(json_array(stripe_event_id, id)) FROM events"
        f" WHERE stripe_event_id IN {_ids()}"
    ),
    "insert_deliveries": MultiRow(
        "INSERT INTO deliveries (event_id, stripe_event_id, workflow_id, action_index,"
        " action_type, status, attempt_count, next_attempt_at, lease_until, claim_id,"
        " deadline_at, last_error, force, sent_ok, created_at, updated_at, person_key)"
        " SELECT column1, column2, column3, column4, column5, column6, 0,"
        f" CASE WHEN column6 IN {DUE} THEN column9 END, NULL, NULL, column9 + column8,"
        " column7, 0, 0, column9, column9, column10"
        " FROM (VALUES {rows})",
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        _DELIVERY_COLUMNS,
    ),
    "upsert_customers": (
        f"INSERT INTO customers ({', '.join(_CUSTOMER_COLUMNS)}, updated_at)"
        f" SELECT {', '.join(_field(c) for c in _CUSTOMER_COLUMNS)}, {NOW}"
        " FROM json_each(?) WHERE true ORDER BY key"
        " ON CONFLICT (stripe_customer_id) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in (*_CUSTOMER_COLUMNS[1:], "updated_at"))
        # Equal watermarks write: the later fetch of the same moment wins.
        + " WHERE customers.watermark <= excluded.watermark"
    ),
    **_billing(),
    # Claims ------------------------------------------------------------------------------
    # A claimed delivery's next_attempt_at is its lease end, so "due" covers never-claimed
    # rows and expired leases alike, and the (status, next_attempt_at) index serves it.
    # One person, one order: a delivery whose person (person_key) has a delivery under a
    # live claim waits for that claim. The held people come from a small partial index
    # (named: without statistics the planner would walk every open delivery instead).
    "claim_due_ids": (
        "SELECT json_group_array(id) FROM (SELECT id FROM deliveries"
        f" WHERE status IN {DUE} AND next_attempt_at <= ?1 AND (person_key IS NULL"
        " OR person_key NOT IN (SELECT person_key FROM deliveries INDEXED BY ix_deliveries_held"
        " WHERE claim_id IS NOT NULL"
        f" AND status IN {DUE} AND person_key IS NOT NULL AND lease_until > ?1))"
        " ORDER BY next_attempt_at, id LIMIT ?2)"
    ),
    "claim_mark": (
        "UPDATE deliveries SET claim_id = ? || CAST(id AS TEXT), lease_until = ?,"
        f" next_attempt_at = ?, updated_at = ?, worker_id = ? WHERE id IN {_ids()}"
    ),
    "claimed": (
        "SELECT json_group_array(json_array(d.id, d.claim_id, d.event_id, d.stripe_event_id,"
        " d.workflow_id, d.action_index, d.action_type, d.status, d.attempt_count,"
        " d.deadline_at, d.force, d.sent_ok, e.type, e.livemode, e.created, e.payload))"
        f" FROM deliveries AS d JOIN events AS e ON e.id = d.event_id WHERE d.id IN {_ids()}"
    ),
    # Finishes ----------------------------------------------------------------------------
    "insert_attempts": MultiRow(
        f"INSERT INTO attempts ({', '.join(_ATTEMPT_COLUMNS)}) VALUES {{rows}}",
        f"({', '.join('?' * len(_ATTEMPT_COLUMNS))})",
        _ATTEMPT_COLUMNS,
    ),
    # CROSS JOIN keeps json_each the outer loop: each completion looks its delivery up by id.
    "owned_claims": (
        "SELECT json_group_array(d.id) FROM json_each(?) AS j CROSS JOIN deliveries AS d"
        f" ON d.id = {_field('id', 'j.value')} AND d.claim_id = {_field('claim_id', 'j.value')}"
        f" WHERE d.status IN {DUE}"
    ),
    # (id, claim_id, status, retry delay or NULL, error, final, sent_ok, counted) per row.
    "finish_owned": MultiRow(
        "UPDATE deliveries SET status = v.column3,"
        f" next_attempt_at = CASE WHEN v.column4 IS NULL THEN NULL ELSE {NOW} + v.column4 END,"
        " lease_until = NULL, claim_id = NULL, worker_id = NULL, last_error = v.column5,"
        " force = CASE WHEN v.column6 THEN 0 ELSE deliveries.force END,"
        " sent_ok = CASE WHEN v.column7 THEN 1 ELSE deliveries.sent_ok END,"
        " attempt_count = deliveries.attempt_count + v.column8,"
        f" updated_at = {NOW} FROM (VALUES {{rows}}) AS v WHERE deliveries.id = v.column1"
        f" AND deliveries.claim_id = v.column2 AND deliveries.status IN {DUE}",
        "(?, ?, ?, ?, ?, ?, ?, ?)",
        ("id", "claim_id", "status", "retry_in", "error", "final", "sent_ok", "counted"),
    ),
    # Heartbeats --------------------------------------------------------------------------
    "worker_beat": (
        "INSERT INTO workers (id, host, pid, version, started_at, beat_at, in_flight)"
        f" VALUES (?, ?, ?, ?, {NOW}, {NOW}, ?) ON CONFLICT (id) DO UPDATE"
        " SET beat_at = excluded.beat_at, in_flight = excluded.in_flight"
    ),
    "workers_silent": (
        f"SELECT json_group_array(id) FROM workers WHERE beat_at < {NOW} - ? AND id <> ?"
    ),
    # Claims of silent workers become due now; their claim ids stay (a late finish from the
    # old owner is refused once another worker has claimed the delivery).
    "release_claims": (
        # Due again in the place they had when claimed (the claim's time), ahead of what
        # arrived since: a backlog must not delay the takeover.
        f"UPDATE deliveries SET next_attempt_at = MIN(updated_at, {NOW}), lease_until = {NOW},"
        " worker_id = NULL"
        f" WHERE status IN {DUE} AND next_attempt_at > {NOW} AND claim_id IS NOT NULL"
        f" AND worker_id IN {_ids()}"
    ),
    "forget_workers": f"DELETE FROM workers WHERE id IN {_ids()}",
    "list_workers": (
        "SELECT json_group_array(json_array(id, host, pid, version, started_at, beat_at,"
        f" in_flight, {NOW})) FROM (SELECT * FROM workers WHERE beat_at >= {NOW} - ?"
        " ORDER BY host, pid, id)"
    ),
}
