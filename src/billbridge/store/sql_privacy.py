"""SQL for retention and erasure: pruned payloads, one person's data removed, the record.

A mixin of `SqlStore` (both drivers; every write through the writer, in bounded batches
so no transaction is long). Payloads become `personal.payload_stub`; attempts lose their
request and response bodies; errors keep their words with personal values redacted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billbridge.store import queries
from billbridge.store.personal import payload_stub, personal_values, redact
from billbridge.store.records import FINAL_STATUSES, DeliveryStatus
from billbridge.store.records_privacy import ErasureRecord, PersonData
from billbridge.store.sql_hooks import SqlHooks
from billbridge.store.tables import attempts, customers, deliveries, events, meta
from billbridge.store.tables_billing import BILLING_TABLES, billing_customers
from billbridge.store.tables_privacy import erasures

ERASED_SKIP = "not sent: the person's personal data was erased"
# An erasure event is scrubbed once its Customer.io action is done (a failure stays, to be
# replayed).
_ERASURE_DONE = ("succeeded", "skipped", "dry_run")


def matched_hash(value: str) -> str:
    """The SHA-256 hex an erasure records for what it was asked to match: the customer id
    as given, an email lower-cased (so "was X erased?" is answered by hashing X again)."""
    text = value.strip()
    return hashlib.sha256((text.lower() if "@" in text else text).encode()).hexdigest()


def _unfinished(event_id: sa.ColumnElement[Any]) -> sa.Exists:
    return (
        sa.select(deliveries.c.id)
        .where(deliveries.c.event_id == event_id, deliveries.c.status.not_in(FINAL_STATUSES))
        .exists()
    )


# What `_scrub_events` reads of an event: its stub's fields, and the personal data in it.
_SCRUB_COLUMNS = (
    events.c.id,
    events.c.stripe_event_id,
    events.c.type,
    events.c.created,
    events.c.livemode,
    events.c.email,
    events.c.payload,
)


class SqlPrivacyMixin(SqlHooks):
    """Retention, erasure and the erasure record of the SQL store."""

    # A fleet's turn -----------------------------------------------------------------------

    def claim_turn(self, key: str, interval: float) -> bool:
        """Compare-and-set on the meta row `key` (the last run's database time): True for
        exactly one caller per `interval` seconds, across every process."""

        def tx(conn: Connection) -> bool:
            now = self._db_now(conn)
            last = conn.execute(sa.select(meta.c.value).where(meta.c.key == key)).scalar()
            if last is None:
                inserted = conn.execute(
                    self._insert(meta)
                    .values(key=key, value=repr(now))
                    .on_conflict_do_nothing(index_elements=[meta.c.key])
                    .returning(meta.c.key)
                ).first()
                return inserted is not None
            try:
                due = now - float(last) >= interval
            except ValueError:
                due = True
            if not due:
                return False
            won = conn.execute(
                sa.update(meta)
                .where(meta.c.key == key, meta.c.value == last)
                .values(value=repr(now))
                .returning(meta.c.key)
            ).first()
            return won is not None

        return self._write(tx)

    # Retention ----------------------------------------------------------------------------

    def prune_events(self, older_than: float, limit: int) -> int:
        def tx(conn: Connection) -> int:
            now = self._db_now(conn)
            rows = conn.execute(
                sa.select(*_SCRUB_COLUMNS)
                .where(
                    events.c.pruned_at.is_(None),
                    events.c.received_at < now - older_than,
                    sa.not_(_unfinished(events.c.id)),
                )
                .order_by(events.c.pruned_at, events.c.received_at)
                .limit(limit)
            ).all()
            values = {
                int(row.id): personal_values(row.payload) | ({row.email} if row.email else set())
                for row in rows
            }
            self._scrub_events(conn, rows, values, now, "retention")
            return len(rows)

        return self._write(tx)

    @staticmethod
    def _scrub_events(
        conn: Connection, rows: Sequence[Any], values: dict[int, set[str]], now: float, reason: str
    ) -> None:
        """Stub the events' payloads; clear their attempts' bodies; redact their errors.
        A few statements per batch (executemany), whatever its size."""
        if not rows:
            return
        ids = [int(row.id) for row in rows]
        changes: dict[str, Any] = {
            "payload": sa.bindparam("b_payload"),
            "email": None,
            "pruned_reason": reason,
            "pruned_at": sa.func.coalesce(events.c.pruned_at, now),
        }
        if reason == "erasure":
            changes["customer_id"] = None
            changes["object_id"] = sa.case(
                (events.c.object_id.like("cus\\_%", escape="\\"), None),
                else_=events.c.object_id,
            )
        conn.execute(
            sa.update(events).where(events.c.id == sa.bindparam("b_id")).values(**changes),
            [
                {
                    "b_id": int(row.id),
                    "b_payload": payload_stub(
                        row.stripe_event_id, row.type, int(row.created), bool(row.livemode)
                    ),
                }
                for row in rows
            ],
        )
        # The person key (a customer id or an email) only orders deliveries still to send.
        conn.execute(
            sa.update(deliveries)
            .where(deliveries.c.event_id.in_(ids), deliveries.c.status.in_(FINAL_STATUSES))
            .values(person_key=None)
        )
        delivery_rows = conn.execute(
            sa.select(deliveries.c.id, deliveries.c.event_id, deliveries.c.last_error).where(
                deliveries.c.event_id.in_(ids)
            )
        ).all()
        event_of = {int(d.id): int(d.event_id) for d in delivery_rows}
        redacted = [
            {"b_id": int(d.id), "b_error": redact(d.last_error, values[int(d.event_id)])}
            for d in delivery_rows
            if d.last_error is not None
        ]
        _update_changed(conn, deliveries, deliveries.c.last_error, redacted, delivery_rows)
        if not event_of:
            return
        conn.execute(
            sa.update(attempts)
            .where(
                attempts.c.delivery_id.in_(list(event_of)),
                sa.or_(attempts.c.request.is_not(None), attempts.c.response_body.is_not(None)),
            )
            .values(request=None, response_body=None)
        )
        attempt_rows = conn.execute(
            sa.select(attempts.c.id, attempts.c.delivery_id, attempts.c.error).where(
                attempts.c.delivery_id.in_(list(event_of)), attempts.c.error.is_not(None)
            )
        ).all()
        redacted = [
            {
                "b_id": int(a.id),
                "b_error": redact(a.error, values[event_of[int(a.delivery_id)]]),
            }
            for a in attempt_rows
        ]
        _update_changed(conn, attempts, attempts.c.error, redacted, attempt_rows)

    def scrub_finished_erasures(self, limit: int) -> int:
        def tx(conn: Connection) -> int:
            now = self._db_now(conn)
            not_done = (
                sa.select(deliveries.c.id)
                .where(
                    deliveries.c.event_id == events.c.id,
                    deliveries.c.status.not_in(_ERASURE_DONE),
                )
                .exists()
            )
            rows = conn.execute(
                sa.select(*_SCRUB_COLUMNS)
                .where(events.c.source == "erasure", events.c.pruned_at.is_(None), ~not_done)
                .limit(limit)
            ).all()
            values = {
                int(row.id): personal_values(row.payload) | _identifiers(row.payload)
                for row in rows
            }
            self._scrub_events(conn, rows, values, now, "erasure")
            return len(rows)

        return self._write(tx)

    # Erasure ------------------------------------------------------------------------------

    def find_person(self, *, customer_id: str | None, email: str | None) -> PersonData:
        def read(conn: Connection) -> PersonData:
            ids: set[str] = {customer_id} if customer_id else set()
            emails: set[str] = {email.strip().lower()} if email else set()
            if emails:
                ids |= _strings(
                    conn,
                    sa.select(customers.c.stripe_customer_id).where(
                        sa.func.lower(customers.c.email).in_(emails)
                    ),
                    sa.select(events.c.customer_id).where(
                        sa.func.lower(events.c.email).in_(emails),
                        events.c.customer_id.is_not(None),
                    ),
                    sa.select(billing_customers.c.id).where(
                        sa.func.lower(billing_customers.c.email).in_(emails)
                    ),
                )
            if ids:
                emails |= {
                    e.lower()
                    for e in _strings(
                        conn,
                        sa.select(customers.c.email).where(customers.c.stripe_customer_id.in_(ids)),
                        sa.select(events.c.email).where(events.c.customer_id.in_(ids)),
                        sa.select(billing_customers.c.email).where(billing_customers.c.id.in_(ids)),
                    )
                }
            names = _strings(
                conn,
                sa.select(customers.c.name).where(customers.c.stripe_customer_id.in_(ids)),
                sa.select(billing_customers.c.name).where(billing_customers.c.id.in_(ids)),
            )
            records = tuple(
                queries.customer_record(row)
                for row in conn.execute(
                    sa.select(customers).where(customers.c.stripe_customer_id.in_(ids))
                )
            )
            matching = _matching_events(ids, emails)
            livemodes = {
                bool(v)
                for v in conn.execute(sa.select(events.c.livemode).where(matching).distinct())
                .scalars()
                .all()
            } | {r.livemode for r in records if r.livemode is not None}
            count = conn.execute(
                sa.select(sa.func.count()).select_from(events).where(matching)
            ).scalar_one()
            return PersonData(
                customer_ids=frozenset(ids),
                emails=frozenset(emails),
                names=frozenset(names),
                customers=records,
                livemodes=frozenset(livemodes),
                events=int(count),
            )

        return self._read(read)

    def erase_events(self, person: PersonData, limit: int) -> int:
        if not person.customer_ids and not person.emails:
            return 0

        def tx(conn: Connection) -> int:
            now = self._db_now(conn)
            rows = conn.execute(
                sa.select(*_SCRUB_COLUMNS)
                .where(_matching_events(person.customer_ids, person.emails))
                .order_by(events.c.id)
                .limit(limit)
            ).all()
            if not rows:
                return 0
            ids = [int(row.id) for row in rows]
            # Nothing of theirs is sent any more: it could re-create the person.
            conn.execute(
                sa.update(deliveries)
                .where(
                    deliveries.c.event_id.in_(ids),
                    deliveries.c.status.not_in(FINAL_STATUSES),
                )
                .values(
                    status="skipped",
                    next_attempt_at=None,
                    lease_until=None,
                    claim_id=None,
                    worker_id=None,
                    last_error=ERASED_SKIP,
                    updated_at=now,
                )
            )
            values = {int(row.id): person.values | personal_values(row.payload) for row in rows}
            self._scrub_events(conn, rows, values, now, "erasure")
            return len(rows)

        return self._write(tx)

    def erase_customers(
        self,
        person: PersonData,
        *,
        matched_by: str,
        matched: str,
        events_erased: int,
        requested_by: str,
        cio_action: str,
        cio_event_ids: Collection[str],
    ) -> int:
        ids = list(person.customer_ids)
        emails = list(person.emails)

        def tx(conn: Connection) -> int:
            now = self._db_now(conn)
            for table in BILLING_TABLES.values():
                conn.execute(sa.delete(table).where(table.c.customer_id.in_(ids)))
            conn.execute(sa.delete(billing_customers).where(billing_customers.c.id.in_(ids)))
            conn.execute(
                sa.delete(billing_customers).where(
                    sa.func.lower(billing_customers.c.email).in_(emails)
                )
            )
            removed = conn.execute(
                sa.delete(customers).where(
                    sa.or_(
                        customers.c.stripe_customer_id.in_(ids),
                        sa.func.lower(customers.c.email).in_(emails),
                    )
                )
            ).rowcount
            conn.execute(
                sa.insert(erasures).values(
                    created_at=now,
                    matched_by=matched_by,
                    matched_hash=matched_hash(matched),
                    customers=max(int(removed), 0),
                    events=events_erased,
                    requested_by=requested_by,
                    cio_action=cio_action,
                    cio_event_ids=json.dumps(sorted(cio_event_ids)),
                )
            )
            return max(int(removed), 0)

        return self._write(tx)

    def list_erasures(self, limit: int = 50) -> list[ErasureRecord]:
        def read(conn: Connection) -> list[ErasureRecord]:
            rows = conn.execute(
                sa.select(erasures).order_by(erasures.c.id.desc()).limit(limit)
            ).all()
            records = []
            for row in rows:
                event_ids = tuple(str(i) for i in json.loads(row.cio_event_ids))
                statuses = conn.execute(
                    sa.select(deliveries.c.status)
                    .where(deliveries.c.stripe_event_id.in_(event_ids))
                    .order_by(deliveries.c.id)
                ).scalars()
                records.append(
                    ErasureRecord(
                        erasure_id=int(row.id),
                        created_at=float(row.created_at),
                        matched_by=str(row.matched_by),
                        matched_hash=str(row.matched_hash),
                        customers=int(row.customers),
                        events=int(row.events),
                        requested_by=str(row.requested_by),
                        cio_action=str(row.cio_action),
                        cio_event_ids=event_ids,
                        cio_statuses=tuple(cast(DeliveryStatus, s) for s in statuses),
                    )
                )
            return records

        return self._read(read)


def _update_changed(
    conn: Connection,
    table: sa.Table,
    column: sa.Column[Any],
    redacted: list[dict[str, Any]],
    rows: Sequence[Any],
) -> None:
    """Write the redacted texts that differ from what is stored (one executemany)."""
    before = {int(row.id): getattr(row, column.name) for row in rows}
    changed = [item for item in redacted if item["b_error"] != before[item["b_id"]]]
    if changed:
        conn.execute(
            sa.update(table)
            .where(table.c.id == sa.bindparam("b_id"))
            .values({column.name: sa.bindparam("b_error")}),
            changed,
        )


def _matching_events(ids: Collection[str], emails: Collection[str]) -> sa.ColumnElement[bool]:
    return sa.or_(
        events.c.customer_id.in_(list(ids)),
        sa.func.lower(events.c.email).in_(list(emails)),
    )


def _strings(conn: Connection, *selects: sa.Select[Any]) -> set[str]:
    found: set[str] = set()
    for select in selects:
        found |= {v for v in conn.execute(select).scalars() if isinstance(v, str) and v}
    return found


def _identifiers(payload: str | None) -> set[str]:
    """The Customer.io identifier an erasure event carries (`data.object.identifier`)."""
    try:
        data = json.loads(payload or "")
        value = data["data"]["object"]["identifier"]
    except (ValueError, KeyError, TypeError):
        return set()
    return {value} if isinstance(value, str) else set()


__all__ = ["ERASED_SKIP", "SqlPrivacyMixin", "matched_hash"]
