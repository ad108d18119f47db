"""SQL for the billing projection: guarded upserts of object snapshots, per-customer reads.

A mixin of `SqlStore` (both drivers) over the same hooks (`_read`, `_write`, `_insert`,
`_now_expr`), so SQLite writes go through the writer thread like any other, and ingest
can apply the rows of an event inside its own transaction (`_apply_billing_tx`).
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from billbridge.store.base import Store
from billbridge.store.records_billing import BillingRow, BillingState
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


def _row_dict(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    data.pop("updated_at", None)
    items = data.get("items")
    if isinstance(items, str):
        data["items"] = json.loads(items)
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
        values: dict[str, Any] = {
            "id": row.stripe_id,
            "customer_id": row.customer_id,
            "account": row.account,
            "livemode": row.livemode,
            "created": row.created,
            "watermark": row.watermark,
            "order_key": row.order_key,
            **{
                key: json.dumps(value, separators=(",", ":")) if key == "items" else value
                for key, value in row.values.items()
            },
        }
        for flag in row.sticky:
            values[flag] = True
        for column in table.c:  # flags not named default to false on first insert
            if column.name not in values and column.name != "updated_at" and not column.nullable:
                values[column.name] = False
        stmt = self._insert(table).values(values).values(updated_at=self._now_expr)
        updated = [name for name in values if name != "id" and name not in STICKY_COLUMNS]
        upsert = stmt.on_conflict_do_update(
            index_elements=[table.c.id],
            set_={
                **{name: stmt.excluded[name] for name in updated},
                # What a snapshot lacks (a deleted stub's fields, a dispute's customer) is
                # kept from the stored row rather than forgotten.
                **{
                    name: sa.func.coalesce(stmt.excluded[name], table.c[name])
                    for name in ("customer_id", "account", "livemode", "created")
                },
                "updated_at": stmt.excluded.updated_at,
            },
            where=table.c.order_key < stmt.excluded.order_key,
        ).returning(table.c.id)
        changed = conn.execute(upsert).first() is not None
        # Sticky flags (set whatever the order) and a customer learnt late: outside the guard.
        for flag in row.sticky:
            result = conn.execute(
                sa.update(table)
                .where(table.c.id == row.stripe_id, table.c[flag].is_(False))
                .values({flag: True, "updated_at": self._now_expr})
            )
            changed = changed or result.rowcount > 0
        if row.customer_id is not None:
            result = conn.execute(
                sa.update(table)
                .where(table.c.id == row.stripe_id, table.c.customer_id.is_(None))
                .values(customer_id=row.customer_id, updated_at=self._now_expr)
            )
            changed = changed or result.rowcount > 0
        return changed

    # Reads --------------------------------------------------------------------------------

    def billing_state(self, customer_id: str) -> BillingState:
        return self._read(lambda conn: self._billing_state(conn, customer_id))

    @staticmethod
    def _billing_state(conn: Connection, customer_id: str) -> BillingState:
        def rows(stmt: sa.Select[Any]) -> tuple[dict[str, Any], ...]:
            return tuple(_row_dict(row) for row in conn.execute(stmt))

        customer = conn.execute(
            sa.select(billing_customers).where(billing_customers.c.id == customer_id)
        ).first()
        own_charges = sa.select(billing_charges.c.id).where(
            billing_charges.c.customer_id == customer_id
        )

        def linked(table: sa.Table) -> sa.Select[Any]:
            return (
                sa.select(table)
                .where(
                    sa.or_(table.c.customer_id == customer_id, table.c.charge_id.in_(own_charges))
                )
                .order_by(table.c.id)
            )

        def own(table: sa.Table) -> sa.Select[Any]:
            return sa.select(table).where(table.c.customer_id == customer_id).order_by(table.c.id)

        return BillingState(
            customer=None if customer is None else _row_dict(customer),
            subscriptions=rows(own(billing_subscriptions)),
            charges=rows(own(billing_charges)),
            refunds=rows(linked(billing_refunds)),
            invoices=rows(own(billing_invoices)),
            disputes=rows(linked(billing_disputes)),
        )

    def get_billing_object(self, kind: str, stripe_id: str) -> dict[str, Any] | None:
        table = BILLING_TABLES[kind]
        stmt = sa.select(table).where(table.c.id == stripe_id)
        row = self._read(lambda conn: conn.execute(stmt).first())
        return None if row is None else _row_dict(row)
