"""The store as a decision reads it: what is stored, with what the decision learnt applied.

    reads = PendingReads(store)
    reads.add_rows(rows_for_object(fetched, watermark=read_at))   # learnt, not written
    reads.billing_state("cus_1")     # the stored state with those rows applied
    store.finish_many(completions, reads.facts())                 # written once, later

Deciding a delivery writes nothing: customers read from the Stripe API, projection rows
from expanded reads and customer links are kept here and written with the batch's
outcome (`Store.finish_many`), or dropped (a "Try it" preview). Reads through this
object see them as the store will once they are written: a customer record by its
watermark (`upsert_customer`), a billing row under the ordering guard with the columns
kept, flags raised and customers filled in exactly as `outbox.apply_billing` does (a
test holds the two to the same result).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from billbridge.store.records import CustomerRecord
from billbridge.store.records_billing import BillingRow, BillingState, DiscoveredFacts
from billbridge.store.tables_billing import BILLING_TABLES

# As in the upsert statements: columns a snapshot without them keeps (COALESCE), flags
# only ever raised, and what a deleted customer's stub (no email field) writes.
_KEPT = ("customer_id", "account", "livemode", "created")
_STICKY = ("deleted", "payment_failed")
_COMMON = ("customer_id", "account", "livemode", "created", "watermark", "order_key")
_STATE_KINDS = (
    ("subscription", "subscriptions"),
    ("charge", "charges"),
    ("refund", "refunds"),
    ("invoice", "invoices"),
    ("dispute", "disputes"),
)


class BillingReads(Protocol):
    """The reads a decision makes (a `Store`, or `PendingReads` over one)."""

    def get_customer(self, stripe_customer_id: str) -> CustomerRecord | None: ...

    def billing_state(self, customer_id: str) -> BillingState: ...

    def get_billing_object(self, kind: str, stripe_id: str) -> dict[str, Any] | None: ...


def newer_customer(
    stored: CustomerRecord | None, learnt: CustomerRecord | None
) -> CustomerRecord | None:
    """The record the customers table holds once `learnt` is upserted over `stored`
    (equal watermarks: the later write wins)."""
    if learnt is None:
        return stored
    if stored is None or stored.watermark <= learnt.watermark:
        return learnt
    return stored


def applied_row(stored: dict[str, Any] | None, row: BillingRow) -> dict[str, Any]:
    """The projection row (column -> value, JSON columns decoded) after `row` is applied
    over `stored` (None: no row yet) by the guarded upsert."""
    stub = row.kind == "customer" and "email" not in row.values
    if stored is None:
        table = BILLING_TABLES[row.kind]
        result: dict[str, Any] = {
            str(c.name): (None if c.nullable else False) for c in table.c if c.name != "updated_at"
        }
        result["id"] = row.stripe_id
    else:
        result = dict(stored)
    if stored is None or str(stored["order_key"]) < row.order_key:
        fresh = {
            "customer_id": row.customer_id,
            "account": row.account,
            "livemode": row.livemode,
            "created": row.created,
            "watermark": row.watermark,
            "order_key": row.order_key,
            **({} if stub else row.values),
        }
        for column, value in fresh.items():
            if column in _STICKY and stored is not None:
                continue
            if column in _KEPT and value is None and stored is not None:
                continue
            if stub and column not in _COMMON:
                continue
            result[column] = value
    elif result.get("customer_id") is None and row.customer_id is not None:
        result["customer_id"] = row.customer_id
    for flag in row.sticky:
        result[flag] = True
    return result


class PendingReads:
    """Reads of `store` with the facts learnt so far applied; collects those facts."""

    def __init__(self, store: BillingReads) -> None:
        self._store = store
        self._customers: dict[str, CustomerRecord] = {}
        self._rows: list[BillingRow] = []
        self._stored: dict[tuple[str, str], dict[str, Any] | None] = {}

    # Learning -----------------------------------------------------------------------------

    def add_customer(self, record: CustomerRecord) -> None:
        """A customer read from the Stripe API."""
        kept = newer_customer(self._customers.get(record.stripe_customer_id), record)
        assert kept is not None  # noqa: S101 - `record` is not None
        self._customers[record.stripe_customer_id] = kept

    def add_rows(self, rows: Iterable[BillingRow]) -> bool:
        """Projection rows (an expanded read, a link); whether there were any."""
        before = len(self._rows)
        self._rows.extend(rows)
        return len(self._rows) > before

    def facts(self) -> DiscoveredFacts:
        """Everything learnt, to be written with the batch's outcome."""
        return DiscoveredFacts(tuple(self._customers.values()), tuple(self._rows))

    # Reading ------------------------------------------------------------------------------

    def get_customer(self, stripe_customer_id: str) -> CustomerRecord | None:
        stored = self._store.get_customer(stripe_customer_id)
        return self.customer_with_pending(stripe_customer_id, stored)

    def customer_with_pending(
        self, stripe_customer_id: str, stored: CustomerRecord | None
    ) -> CustomerRecord | None:
        """A customers-table record already read, with what was learnt applied."""
        return newer_customer(stored, self._customers.get(stripe_customer_id))

    def get_billing_object(self, kind: str, stripe_id: str) -> dict[str, Any] | None:
        found = self._stored_object(kind, stripe_id)
        for row in self._rows:
            if (row.kind, row.stripe_id) == (kind, stripe_id):
                found = applied_row(found, row)
        return found

    def billing_state(self, customer_id: str) -> BillingState:
        return self.state_with_pending(customer_id, self._store.billing_state(customer_id))

    def state_with_pending(self, customer_id: str, state: BillingState) -> BillingState:
        """A customer's billing state already read, with the learnt rows applied: rows
        linked to the customer join it, as they will once written."""
        if not self._rows:
            return state
        objects: dict[tuple[str, str], dict[str, Any]] = {}
        if state.customer is not None:
            objects["customer", str(state.customer["id"])] = state.customer
        for kind, name in _STATE_KINDS:
            for obj in getattr(state, name):
                objects[kind, str(obj["id"])] = obj
        for row in self._rows:
            key = (row.kind, row.stripe_id)
            stored = objects[key] if key in objects else self._stored_object(*key)
            objects[key] = applied_row(stored, row)
        by_kind: dict[str, list[dict[str, Any]]] = {kind: [] for kind, _ in _STATE_KINDS}
        for (kind, _), obj in sorted(objects.items()):
            if kind in by_kind and obj.get("customer_id") == customer_id:
                by_kind[kind].append(obj)
        charges = {str(obj["id"]) for obj in by_kind["charge"]}
        for (kind, _), obj in sorted(objects.items()):
            linked = obj.get("customer_id") != customer_id and obj.get("charge_id") in charges
            if kind in ("refund", "dispute") and linked:
                by_kind[kind].append(obj)
        for rows in by_kind.values():
            rows.sort(key=lambda obj: str(obj["id"]))
        return BillingState(
            customer=objects.get(("customer", customer_id)),
            **{name: tuple(by_kind[kind]) for kind, name in _STATE_KINDS},
        )

    def _stored_object(self, kind: str, stripe_id: str) -> dict[str, Any] | None:
        """The stored row, read once per decision batch."""
        key = (kind, stripe_id)
        if key not in self._stored:
            self._stored[key] = self._store.get_billing_object(kind, stripe_id)
        return self._stored[key]
