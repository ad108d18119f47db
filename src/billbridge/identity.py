"""Identity resolution: which Customer.io person a Stripe event is about.

    person = IdentityResolver(settings, store, stripe_api).resolve(event)
    if isinstance(person, Unresolved): skip the delivery with `person.reason`

Order (ARCHITECTURE §5): the ids and email in the payload, then the local customers
table (fed by customer.* events and earlier API reads), then the Stripe API when a key
is configured. Reads only: a customer read from the API is handed to `found` (a
`PendingReads`), and the executor writes it to the table with the batch's outcome.
Synchronous: the worker calls it in a thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from billbridge.config import Settings
from billbridge.errors import StripeAPIError
from billbridge.store.base import Store
from billbridge.store.pending import PendingReads, newer_customer
from billbridge.store.records import CustomerRecord
from billbridge.stripe.api import StripeAPI
from billbridge.stripe.events import (
    customer_id_of,
    customer_record_from_object,
    email_of,
    is_customer_event,
    object_of,
    previous_email_of,
)
from billbridge.workflows.builtin import erasure_identifier

logger = logging.getLogger(__name__)

UNRESOLVED_REASON = "no Stripe customer and no email in the event"


@dataclass(frozen=True)
class Person:
    """The person an event is about. `identifier` is the Customer.io id to use."""

    identifier: str
    customer_id: str | None
    email: str | None
    customer: dict[str, Any] = field(default_factory=dict)  # best known Stripe customer
    # The identifier the person had before this event changed it (an email change under
    # BILLBRIDGE_IDENTIFIER=email): identify addresses them by it, so they are updated.
    previous_identifier: str | None = None


@dataclass(frozen=True)
class Unresolved:
    """No person can be named for this event; `reason` says why (safe to show)."""

    reason: str


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _email(value: Any) -> str | None:
    text = _text(value)
    return text if text and "@" in text else None


def _record_as_customer(record: CustomerRecord) -> dict[str, Any]:
    customer: dict[str, Any] = {
        "id": record.stripe_customer_id,
        "object": "customer",
        "email": record.email,
        "name": record.name,
        "metadata": dict(record.metadata),
        "created": record.created,
    }
    if record.deleted:
        customer["deleted"] = True
    return customer


def _charge_id_of(obj: dict[str, Any]) -> str | None:
    """The charge behind a dispute or refund (`charge`) or a PaymentIntent (`latest_charge`)."""
    for key in ("charge", "latest_charge"):
        value = obj.get(key)
        if isinstance(value, dict):
            value = value.get("id")
        if _text(value):
            return str(value)
    return None


class IdentityResolver:
    """Turns a Stripe event into a `Person` (or `Unresolved`) per `settings.identifier`."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        stripe_api: StripeAPI | None,
        *,
        stripe_api_source: Callable[[], StripeAPI | None] | None = None,
    ) -> None:
        self._identifier = settings.identifier
        self._store = store
        # `stripe_api_source` gives the client for the current key (it may be saved in the
        # dashboard while running); without it the fixed `stripe_api` is used.
        self._api_source = stripe_api_source or (lambda: stripe_api)

    @property
    def _api(self) -> StripeAPI | None:
        return self._api_source()

    @property
    def stripe_api(self) -> StripeAPI | None:
        """The Stripe API client for the current key, or None (no key): what the billing
        context reads objects with."""
        return self._api_source()

    def resolve(
        self,
        event: dict[str, Any],
        *,
        known: dict[str, CustomerRecord | None] | None = None,
        found: PendingReads | None = None,
    ) -> Person | Unresolved:
        """The person for `event`. Writes nothing.

        `known` holds customers-table records already read (None: no row), e.g. for a whole
        batch of deliveries; a customer it lacks is read from the store, and one fetched
        from the Stripe API is put in it as the table will hold it once written. That
        fetched record is also added to `found` (to be written with the outcome).

        Raises `StripeAPIError` only when it is retryable (the delivery is retried
        later); a non-retryable API failure resolves with what is already known.
        """
        erased = erasure_identifier(event)
        if erased is not None:  # an erasure's Customer.io action names its person directly
            return Person(identifier=erased, customer_id=None, email=None)
        obj = object_of(event)
        account = _text(event.get("account"))
        customer_id = customer_id_of(event)
        email = email_of(event)
        customer: dict[str, Any] = {}
        from_payload = is_customer_event(event)
        if from_payload:
            customer = dict(obj)

        # A dispute, refund or PaymentIntent without customer nor email: its charge knows.
        charge_hint = ""
        if customer_id is None and email is None:
            charge_id = _charge_id_of(obj)
            if charge_id and self._api is not None:
                charge = self._call(lambda: self._api_get_charge(charge_id, account))
                if charge:
                    customer_id = _text(charge.get("customer"))
                    billing = charge.get("billing_details")
                    billing_email = billing.get("email") if isinstance(billing, dict) else None
                    email = _email(billing_email) or _email(charge.get("receipt_email"))
            elif charge_id:
                charge_hint = "; set STRIPE_API_KEY to look up the charge's customer"

        record: CustomerRecord | None = None
        if customer_id is not None and not from_payload:
            if known is not None and customer_id in known:
                record = known[customer_id]
            else:
                record = self._store.get_customer(customer_id)
            if record is not None:
                customer = _record_as_customer(record)
                email = email or record.email

        # The API only when the email is still unknown, or when the identifier needs
        # metadata that neither the payload nor the table supplied. A deleted customer
        # would only answer a stub, so the table is all there is.
        wants_metadata = self._identifier.startswith("metadata:") and not customer
        needs_api = (
            customer_id is not None
            and self._api is not None
            and not from_payload
            and not (record is not None and record.deleted)
            and (email is None or wants_metadata)
        )
        if needs_api and customer_id is not None:
            fetched = self._call(
                lambda: self._fetch_customer(customer_id, account, record, known, found)
            )
            if fetched:
                customer = fetched
                email = email or _email(fetched.get("email"))

        identifier = self._identifier_for(customer_id, email, customer)
        if identifier is None:
            return Unresolved(UNRESOLVED_REASON + charge_hint)
        previous: str | None = None
        old_email = previous_email_of(event) if from_payload else None
        if self._identifier == "email" and old_email and identifier == email:
            previous = old_email if old_email.lower() != identifier.lower() else None
        return Person(
            identifier=identifier,
            customer_id=customer_id,
            email=email,
            customer=customer,
            previous_identifier=previous,
        )

    # Internals ----------------------------------------------------------------------------

    def _identifier_for(
        self, customer_id: str | None, email: str | None, customer: dict[str, Any]
    ) -> str | None:
        mode = self._identifier
        if mode == "email":
            return email or customer_id
        if mode.startswith("metadata:"):
            key = mode.removeprefix("metadata:")
            metadata = customer.get("metadata")
            value = metadata.get(key) if isinstance(metadata, dict) else None
            if isinstance(value, int | float) and not isinstance(value, bool):
                value = str(value)
            chosen = _text(value.strip() if isinstance(value, str) else None)
            return chosen or customer_id or email
        return customer_id or email

    def _api_get_charge(self, charge_id: str, account: str | None) -> dict[str, Any] | None:
        assert self._api is not None  # noqa: S101 - checked by the caller
        return self._api.get_charge(charge_id, account=account)

    def _fetch_customer(
        self,
        customer_id: str,
        account: str | None,
        stored: CustomerRecord | None,
        known: dict[str, CustomerRecord | None] | None,
        found: PendingReads | None,
    ) -> dict[str, Any] | None:
        """The customer from the API; its record goes to `found` (written later, so that
        later lookups hit the table) and to `known` (the decisions of this batch)."""
        assert self._api is not None  # noqa: S101 - checked by the caller
        fetched = self._api.get_customer(customer_id, account=account)
        if fetched is not None and _text(fetched.get("id")):
            record = customer_record_from_object(fetched, watermark=int(time.time()))
            if found is not None:
                found.add_customer(record)
            if known is not None:  # the table may keep a newer row
                known[customer_id] = newer_customer(stored, record)
        return fetched

    @staticmethod
    def _call(read: Callable[[], dict[str, Any] | None]) -> dict[str, Any] | None:
        """Run an API read; retryable errors propagate, the others resolve as unknown."""
        try:
            result = read()
        except StripeAPIError as exc:
            if exc.retryable:
                raise
            logger.warning("Stripe lookup failed, resolving with what is known: %s", exc)
            return None
        return result
