"""SQL for the billing projection: guarded upserts of object snapshots, per-customer reads.

A mixin of `SqlStore` (both drivers) over the same hooks (`_read`, `_write`, `_insert`,
`_now_expr`), so SQLite writes go through the writer thread like any other, and ingest
can apply the rows of an event inside its own transaction (`_apply_billing_tx`).
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Callable, Collection, Sequence
from functools import partial
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from billbridge.store.base import Store
from billbridge.store.queries import customer_record
from billbridge.store.records import CustomerRecord
from billbridge.store.records_billing import BillingRow, BillingState, CustomerSnapshot
from billbridge.store.tables import customers
from billbridge.store.tables_billing import (
    BILLING_TABLES,
    billing_charges,
    billing_customers,
    billing_disputes,
    billing_invoices,
    billing_refunds,
    billing_subscriptions,
)

T = TypeVar("T")
Insert = sqlite.Insert | postgresql.Insert

# Flags that only ever rise (a customer deleted, an invoice that once failed): set by any
# snapshot that has them, whatever its order, and never cleared by the guarded update.
STICKY_COLUMNS = frozenset({"deleted", "payment_failed"})


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


# Projection columns holding JSON text (lists and objects of the billing values).
JSON_COLUMNS = frozenset({"items", "discounts", "pause_collection"})


def _row_dict(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    data.pop("updated_at", None)
    for key in JSON_COLUMNS.intersection(data):
        if isinstance(data[key], str):
            data[key] = json.loads(data[key])
    return data


class SqlBillingMixin(Store):
    """The billing-projection part of the SQL store."""

    @abstractmethod
    def _write(self, fn: Callable[[Connection], T]) -> T: ...

    @abstractmethod
    def _read(self, fn: Callable[[Connection], T]) -> T: ...

    @abstractmethod
    def _insert(self, table: sa.Table) -> Insert: ...

    @property
    @abstractmethod
    def _now_expr(self) -> sa.ColumnElement[float]: ...

    # Writes -------------------------------------------------------------------------------

    def apply_billing(self, rows: Sequence[BillingRow]) -> bool:
        if not rows:
            return False
        return self._write(lambda conn: self._apply_billing_tx(conn, rows))

    def _apply_billing_tx(self, conn: Connection, rows: Sequence[BillingRow]) -> bool:
        changed = False
        for row in rows:
            changed = self._apply_row(conn, row) or changed
        return changed

    def _apply_row(self, conn: Connection, row: BillingRow) -> bool:
        table = BILLING_TABLES[row.kind]
        values = self._row_values(row, table)
        upsert = self._billing_sql(("upsert", table.name, *values), table)
        wrote = self._run_text(conn, upsert, values, returns_row=True)
        return self._after_upsert(conn, row, table, wrote=wrote) or wrote

    @staticmethod
    def _row_values(row: BillingRow, table: sa.Table) -> dict[str, Any]:
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
                key: json.dumps(value, separators=(",", ":"))
                if key in JSON_COLUMNS and value is not None
                else value
                for key, value in row.values.items()
            },
        }
        for flag in row.sticky:
            values[flag] = True
        for column in table.c:  # flags not named default to false on first insert
            if column.name not in values and column.name != "updated_at" and not column.nullable:
                values[column.name] = False
        return values

    def _after_upsert(
        self, conn: Connection, row: BillingRow, table: sa.Table, *, wrote: bool
    ) -> bool:
        """What the guarded upsert of `row` cannot do: sticky flags (set whatever the order)
        and a customer learnt late. True when either changed the row."""
        changed = False
        for flag in row.sticky:
            statement = self._billing_sql(("sticky", table.name, flag), table)
            changed = self._run_text(conn, statement, {"id": row.stripe_id}) or changed
        # A row the upsert wrote already has this customer (COALESCE keeps a stored one).
        if row.customer_id is not None and not wrote:
            statement = self._billing_sql(("customer", table.name), table)
            parameters = {"id": row.stripe_id, "customer_id": row.customer_id}
            changed = self._run_text(conn, statement, parameters) or changed
        return changed

    def _run_text(
        self,
        conn: Connection,
        statement: sa.TextClause,
        parameters: dict[str, Any],
        *,
        returns_row: bool = False,
    ) -> bool:
        """Run one projection statement; True when it wrote (a row came back, or a row
        changed). The SQLite driver runs it on the raw connection, without SQLAlchemy."""
        result = conn.execute(statement, parameters)
        return result.first() is not None if returns_row else result.rowcount > 0

    def _billing_sql(self, key: tuple[str, ...], table: sa.Table) -> sa.TextClause:
        """The projection's write statements as plain SQL, built once per shape: building
        SQLAlchemy constructs per row cost more than the writes themselves on the ingest
        path. Names come from our own tables, never from input."""
        cache: dict[tuple[str, ...], sa.TextClause] = self.__dict__.setdefault(
            "_billing_statements", {}
        )
        statement = cache.get(key)
        if statement is not None:
            return statement
        name, now = table.name, str(self._now_expr)
        if key[0] == "upsert":
            columns = key[2:]
            sql = self._upsert_sql(
                table, columns, f"({', '.join(':' + c for c in columns)}, {now})"
            )
        elif key[0] == "sticky":
            flag = key[2]
            sql = (
                f"UPDATE {name} SET {flag} = true, updated_at = {now}"  # noqa: S608
                f" WHERE id = :id AND {flag} = false"
            )
        else:
            sql = (
                f"UPDATE {name} SET customer_id = :customer_id, updated_at = {now}"  # noqa: S608
                " WHERE id = :id AND customer_id IS NULL"
            )
        statement = sa.text(sql)
        cache[key] = statement
        return statement

    def _upsert_sql(
        self, table: sa.Table, columns: Sequence[str], rows: str, *, returning: bool = True
    ) -> str:
        """The guarded upsert of `columns` (plus updated_at) for the VALUES `rows`: a row is
        written only when its order_key sorts after the stored one; `returning` the ids
        written."""
        name = table.name
        kept = ("customer_id", "account", "livemode", "created")
        sets = [
            f"{c} = COALESCE(excluded.{c}, {name}.{c})" if c in kept else f"{c} = excluded.{c}"
            for c in columns
            if c != "id" and c not in STICKY_COLUMNS
        ]
        return (
            f"INSERT INTO {name} ({', '.join(columns)}, updated_at)"  # noqa: S608
            f" VALUES {rows} ON CONFLICT (id) DO UPDATE SET {', '.join(sets)},"
            " updated_at = excluded.updated_at"
            f" WHERE {name}.order_key < excluded.order_key" + (" RETURNING id" if returning else "")
        )

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
