"""Erasure: one person's personal data removed from every table (a GDPR erasure request).

    eraser = Eraser(store, settings, metrics)
    found = eraser.find(customer_id="cus_123")              # what would be erased (counts)
    report = eraser.erase(customer_id="cus_123", requested_by="admin")

A customer id or an email names the person; both are widened once (the customer's emails,
the email's customers). Then, in bounded transactions: the person's events keep their row
(de-duplication) with a stub payload and no customer id nor email, their unsent
deliveries are skipped (nothing re-creates the person), their attempts lose request and
response bodies, errors are redacted; the customers row and billing projection rows are
deleted; an `erasures` row records the request as a hash and counts, by whom.

The Customer.io action (BILLBRIDGE_ERASURE_CIO_ACTION: delete, suppress, none) goes
through the normal delivery path: one synthetic event per Customer.io person and mode
(source `erasure`, id `bb_erasure_<ulid>`, type `billbridge.erasure`) with one delivery of
the built-in workflow `billbridge-erasure` (action 0 delete_person, 1 suppress_person), so
retries, history and alerts apply. Its payload holds only the person's identifier, which
the retention loop removes once the delivery is done (`Store.scrub_finished_erasures`).
Later webhooks about the person are new data and flow as usual (Stripe still has them).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from billbridge.compact_json import compact_json_text
from billbridge.config import Settings
from billbridge.errors import ErasureRequestError
from billbridge.identity import IdentityResolver, Person
from billbridge.ids import deterministic_ulid
from billbridge.observability import Metrics
from billbridge.store.base import Store
from billbridge.store.records import NewDelivery, NewEvent
from billbridge.store.records_privacy import PersonData
from billbridge.workflows.builtin import (
    ERASURE_ACTION_INDEX,
    ERASURE_EVENT_PREFIX,
    ERASURE_EVENT_TYPE,
    ERASURE_WORKFLOW_ID,
    erasure_workflow,
)

BATCH = 1000  # events per transaction


@dataclass(frozen=True)
class ErasureReport:
    """What an erasure did (no personal value in it)."""

    matched_by: str  # "customer" | "email"
    customers: int
    events: int
    cio_action: str
    cio_event_ids: tuple[str, ...]


class Eraser:
    """Finds and erases one person's data; queues the Customer.io action."""

    def __init__(self, store: Store, settings: Settings, metrics: Metrics) -> None:
        self._store = store
        self._settings = settings
        self._metrics = metrics
        # No Stripe API: resolution must not read the person back from Stripe.
        self._resolver = IdentityResolver(settings, store, None)

    def find(self, *, customer_id: str | None = None, email: str | None = None) -> PersonData:
        """What is stored about the person (for a confirmation: counts, nothing erased)."""
        customer_id, email = _request(customer_id, email)
        return self._store.find_person(customer_id=customer_id, email=email)

    def erase(
        self, *, customer_id: str | None = None, email: str | None = None, requested_by: str
    ) -> ErasureReport:
        """Erase the person (see the module docstring); safe to run again."""
        customer_id, email = _request(customer_id, email)
        person = self._store.find_person(customer_id=customer_id, email=email)
        identifiers = self._identifiers(person, customer_id, email)
        erased = 0
        while done := self._store.erase_events(person, BATCH):
            erased += done
        action = self._settings.erasure_cio_action
        event_ids = self._queue_cio_action(action, identifiers, person)
        customers = self._store.erase_customers(
            person,
            matched_by="customer" if customer_id else "email",
            matched=customer_id or email or "",
            events_erased=erased,
            requested_by=requested_by,
            cio_action=action,
            cio_event_ids=event_ids,
        )
        self._metrics.erasures.inc()
        return ErasureReport(
            matched_by="customer" if customer_id else "email",
            customers=customers,
            events=erased,
            cio_action=action,
            cio_event_ids=tuple(event_ids),
        )

    def _identifiers(
        self, person: PersonData, customer_id: str | None, email: str | None
    ) -> set[str]:
        """The Customer.io identifiers the person has under BILLBRIDGE_IDENTIFIER: one per
        customer (resolved like a customer.updated event), else the email or the id asked."""
        objects: list[dict[str, Any]] = []
        known = {record.stripe_customer_id for record in person.customers}
        for record in person.customers:
            objects.append(
                {
                    "object": "customer",
                    "id": record.stripe_customer_id,
                    "email": record.email,
                    "metadata": dict(record.metadata),
                }
            )
        only_email = sorted(person.emails)[0] if len(person.emails) == 1 else None
        for other in sorted(person.customer_ids - known):
            objects.append({"object": "customer", "id": other, "email": only_email})
        if not objects:
            objects.append({"object": "customer", "id": customer_id, "email": email})
        found: set[str] = set()
        for obj in objects:
            event = {"type": "customer.updated", "data": {"object": obj}}
            resolved = self._resolver.resolve(event, known={})
            if isinstance(resolved, Person):
                found.add(resolved.identifier)
        return found

    def _queue_cio_action(
        self, action: str, identifiers: set[str], person: PersonData
    ) -> list[str]:
        """One synthetic event (and its delivery) per identifier and mode; their ids."""
        if action not in ERASURE_ACTION_INDEX:
            return []
        index = ERASURE_ACTION_INDEX[action]
        workflow = erasure_workflow()
        delivery = NewDelivery(
            workflow_id=ERASURE_WORKFLOW_ID,
            action_index=index,
            action_type=workflow.actions[index].type,
        )
        event_ids: list[str] = []
        now = int(time.time())
        for identifier in sorted(identifiers):
            for livemode in sorted(person.livemodes or {True}, reverse=True):
                ulid = deterministic_ulid(
                    secrets.token_hex(16), ERASURE_WORKFLOW_ID, 0, created=now
                )
                stripe_event_id = ERASURE_EVENT_PREFIX + ulid
                payload = {
                    "id": stripe_event_id,
                    "object": "event",
                    "type": ERASURE_EVENT_TYPE,
                    "created": now,
                    "livemode": livemode,
                    "data": {"object": {"object": "erasure", "identifier": identifier}},
                }
                self._store.ingest(
                    NewEvent(
                        stripe_event_id=stripe_event_id,
                        type=ERASURE_EVENT_TYPE,
                        livemode=livemode,
                        created=now,
                        api_version=None,
                        account=None,
                        object_id=None,
                        customer_id=None,
                        email=None,
                        payload=compact_json_text(payload),
                        source="erasure",
                    ),
                    [delivery],
                    retry_window=self._settings.retry_window,
                )
                event_ids.append(stripe_event_id)
        return event_ids


def _request(customer_id: str | None, email: str | None) -> tuple[str | None, str | None]:
    customer_id = (customer_id or "").strip() or None
    email = (email or "").strip() or None
    if (customer_id is None) == (email is None):
        raise ErasureRequestError("name the person with either a customer id or an email")
    if customer_id is not None and not customer_id.startswith("cus_"):
        raise ErasureRequestError(f"{customer_id!r} is not a Stripe customer id (cus_...)")
    if email is not None and "@" not in email:
        raise ErasureRequestError("the email address must contain @")
    return customer_id, email
