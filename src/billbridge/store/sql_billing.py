"""SQL for the billing projection: guarded upserts of object snapshots, per-customer reads.

A mixin of `SqlStore` (both drivers): writes are `outbox.apply_billing` through the
writer (ingest applies an event's rows inside its own transaction, `outbox.ingest_many`);
reads are SQLAlchemy Core built once.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billbridge.store.outbox import apply_billing, record_facts
from billbridge.store.queries import customer_record
from billbridge.store.records import CustomerRecord
from billbridge.store.records_billing import (
    BillingRow,
    BillingState,
    CustomerSnapshot,
    DiscoveredFacts,
)
from billbridge.store.sql_hooks import SqlHooks
from billbridge.store.tables import customers
from billbridge.store.tables_billing import (
    BILLING_TABLES,
    JSON_COLUMNS,
    billing_charges,
    billing_customers,
    billing_disputes,
    billing_invoices,
    billing_refunds,
    billing_subscriptions,
)

# The reads of customers' billing state, for one (`billing_state`) or many at once
# (`customer_snapshots`), built once: constructing them on every call cost more than
# running them. `ids` expands to the list bound at execution; rows come ordered by id, so
# each customer's stay in that order.
_IDS: sa.BindParameter[str] = sa.bindparam("ids", expanding=True, type_=sa.String())
SNAPSHOT_CHUNK = 400  # customers per round of queries (well under any bound-parameter limit)
_RECORDS_QUERY = sa.select(customers).where(customers.c.stripe_customer_id.in_(_IDS))
_SNAPSHOT_QUERIES: dict[str, sa.Select[Any]] = {
    "customer": sa.select(billing_customers).where(billing_customers.c.id.in_(_IDS)),
    **{
        kind: sa.select(table).where(table.c.customer_id.in_(_IDS)).order_by(table.c.id)
        for kind, table in (
            ("subscriptions", billing_subscriptions),
            ("charges", billing_charges),
            ("invoices", billing_invoices),
        )
    },
    **{
        kind: sa.select(table)
        .where(
            sa.or_(
                table.c.customer_id.in_(_IDS),
                table.c.charge_id.in_(
                    sa.select(billing_charges.c.id).where(billing_charges.c.customer_id.in_(_IDS))
                ),
            )
        )
        .order_by(table.c.id)
        for kind, table in (("refunds", billing_refunds), ("disputes", billing_disputes))
    },
}


def _row_dict(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    data.pop("updated_at", None)
    for key in JSON_COLUMNS.intersection(data):
        if isinstance(data[key], str):
            data[key] = json.loads(data[key])
    return data


class SqlBillingMixin(SqlHooks):
    """The billing-projection part of the SQL store."""

    # Writes -------------------------------------------------------------------------------

    def apply_billing(self, rows: Sequence[BillingRow]) -> bool:
        if not rows:
            return False
        return self._write(lambda conn: apply_billing(self._db(conn), rows))

    def record_facts(self, facts: DiscoveredFacts) -> None:
        if facts:
            self._write(lambda conn: record_facts(self._db(conn), facts))

    # Reads --------------------------------------------------------------------------------

    def billing_state(self, customer_id: str) -> BillingState:
        return self._read(lambda conn: self._billing_states(conn, [customer_id])[customer_id])

    def customer_snapshots(self, customer_ids: Collection[str]) -> dict[str, CustomerSnapshot]:
        ids = sorted(set(customer_ids))
        snapshots: dict[str, CustomerSnapshot] = {}
        for start in range(0, len(ids), SNAPSHOT_CHUNK):
            chunk = ids[start : start + SNAPSHOT_CHUNK]
            snapshots.update(self._read(partial(self._customer_snapshots, ids=chunk)))
        return snapshots

    @staticmethod
    def _customer_snapshots(conn: Connection, ids: list[str]) -> dict[str, CustomerSnapshot]:
        parameters = {"ids": ids}
        records: dict[str, CustomerRecord] = {
            row.stripe_customer_id: customer_record(row)
            for row in conn.execute(_RECORDS_QUERY, parameters)
        }
        states = SqlBillingMixin._billing_states(conn, ids)
        return {
            customer_id: CustomerSnapshot(records.get(customer_id), states[customer_id])
            for customer_id in ids
        }

    @staticmethod
    def _billing_states(conn: Connection, ids: list[str]) -> dict[str, BillingState]:
        """Each customer's projected objects; refunds and disputes also through its charges."""
        parameters = {"ids": ids}
        customer_rows = conn.execute(_SNAPSHOT_QUERIES["customer"], parameters)
        billing_customer = {row.id: _row_dict(row) for row in customer_rows}
        kinds = ("subscriptions", "charges", "refunds", "invoices", "disputes")
        found: dict[str, dict[str, list[dict[str, Any]]]] = {
            customer_id: {kind: [] for kind in kinds} for customer_id in ids
        }
        charge_owner: dict[str, str] = {}
        for kind in kinds:
            for row in conn.execute(_SNAPSHOT_QUERIES[kind], parameters):
                data = _row_dict(row)
                owners = {data["customer_id"]} & found.keys()
                if kind == "charges":
                    charge_owner[data["id"]] = data["customer_id"]
                elif kind in ("refunds", "disputes") and data.get("charge_id") in charge_owner:
                    owners.add(charge_owner[data["charge_id"]])  # linked through its charge
                for owner in owners:
                    found[owner][kind].append(data)
        return {
            customer_id: BillingState(
                customer=billing_customer.get(customer_id),
                **{kind: tuple(rows) for kind, rows in found[customer_id].items()},
            )
            for customer_id in ids
        }

    def get_billing_object(self, kind: str, stripe_id: str) -> dict[str, Any] | None:
        table = BILLING_TABLES[kind]
        stmt = sa.select(table).where(table.c.id == stripe_id)
        row = self._read(lambda conn: conn.execute(stmt).first())
        return None if row is None else _row_dict(row)
