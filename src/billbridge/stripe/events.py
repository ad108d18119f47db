"""Shape check of a verified Stripe event body and the fields Billbridge reads from it.

    event = parse_event(body)              # WebhookRejected(400, reason) when not an event
    customer_id_of(event), email_of(event)  # where Stripe puts them, per event type

Payloads follow the endpoint's API version, so fields that moved between versions are
read defensively (newest place first, then the old one).
"""

from __future__ import annotations

from typing import Any

import orjson

from billbridge.errors import WebhookRejected
from billbridge.store.records import CustomerRecord, EventSource, NewEvent

THIN_EVENT = "thin events (v2.core.event) are not supported; use a snapshot webhook endpoint"
CUSTOMER_EVENTS = ("customer.created", "customer.updated", "customer.deleted")

# Bounds every stored event keeps, so that whatever ingest accepts, the store, the pages,
# the API and the templates can handle: Stripe's events nest about 6 levels; a database
# integer is 64-bit; `datetime` shows years up to 9999.
MAX_NESTING = 64  # levels of objects and arrays, the event itself being level 1
INT64_LIMIT = 2**63  # integers must lie in [-2**63, 2**63)
MAX_TIMESTAMP = 253_402_300_799  # 9999-12-31T23:59:59Z


def bounds_problem(value: Any) -> str | None:
    """Why a decoded event is out of bounds (nesting, integer range), or None.

    One pass over the event without recursion; a typical event (~200 values) costs tens
    of microseconds.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            return f"nested deeper than {MAX_NESTING} levels"
        for item in node.values() if type(node) is dict else node:
            kind = type(item)
            if kind is dict or kind is list:
                stack.append((item, depth + 1))
            elif kind is int and not -INT64_LIMIT <= item < INT64_LIMIT:
                return "an integer outside the 64-bit range"
    return None


def check_event_bounds(event: dict[str, Any]) -> None:
    """Raise ValueError (a message safe to show) when the event is out of bounds."""
    problem = bounds_problem(event)
    if problem is not None:
        raise ValueError(f"the event is {problem}")
    created = event.get("created")
    if isinstance(created, int) and not 0 <= created <= MAX_TIMESTAMP:
        raise ValueError('"created" is not a Unix timestamp between 1970 and 9999')


def parse_event(body: bytes) -> dict[str, Any]:
    """The event as a dict, after checking it has the shape of a Stripe snapshot event."""
    try:
        # orjson: strict RFC 8259 (no NaN/Infinity), UTF-8 only, several times json's speed.
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise WebhookRejected(400, "body is not valid JSON") from None
    if not isinstance(event, dict):
        raise WebhookRejected(400, "body is not a Stripe event: not a JSON object")
    kind = event.get("object")
    if kind == "v2.core.event":
        raise WebhookRejected(400, THIN_EVENT)
    if kind != "event":
        raise WebhookRejected(400, 'body is not a Stripe event: "object" is not "event"')
    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id.startswith("evt_"):
        raise WebhookRejected(400, 'body is not a Stripe event: "id" must start with evt_')
    event_type = event.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise WebhookRejected(400, 'body is not a Stripe event: "type" must be a string')
    created = event.get("created")
    if not isinstance(created, int) or isinstance(created, bool):
        raise WebhookRejected(400, 'body is not a Stripe event: "created" must be an integer')
    if not isinstance(event.get("livemode"), bool):
        raise WebhookRejected(400, 'body is not a Stripe event: "livemode" must be a boolean')
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise WebhookRejected(400, 'body is not a Stripe event: "data.object" must be an object')
    try:
        check_event_bounds(event)
    except ValueError as exc:
        raise WebhookRejected(400, f"body is not a Stripe event: {exc}") from None
    return event


# Small readers --------------------------------------------------------------------------


def object_of(event: dict[str, Any]) -> dict[str, Any]:
    """`event.data.object` (an empty dict when absent)."""
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    return obj if isinstance(obj, dict) else {}


def previous_attributes_of(event: dict[str, Any]) -> dict[str, Any]:
    """`event.data.previous_attributes` (only *.updated events have it), else {}."""
    data = event.get("data")
    previous = data.get("previous_attributes") if isinstance(data, dict) else None
    return previous if isinstance(previous, dict) else {}


def _dig(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _id(value: Any) -> str | None:
    """An id given as a string or as an expanded object `{"id": ...}`."""
    if isinstance(value, dict):
        return _str(value.get("id"))
    return _str(value)


def _email(value: Any) -> str | None:
    text = _str(value)
    return text.strip() if text and "@" in text else None


# Customer and email ---------------------------------------------------------------------


def is_customer_event(event: dict[str, Any]) -> bool:
    """True for customer.created/updated/deleted (not customer.subscription.* etc.)."""
    return event.get("type") in CUSTOMER_EVENTS or (
        object_of(event).get("object") == "customer"
        and str(event.get("type", "")).startswith("customer.")
    )


def customer_id_of(event: dict[str, Any]) -> str | None:
    """The Stripe customer the event is about, when the payload names one.

    customer.* events: the object's own id; other objects: their `customer` field (an
    id, or an expanded object). Disputes carry none (their charge does).
    """
    obj = object_of(event)
    if is_customer_event(event):
        return _id(obj.get("id"))
    return _id(obj.get("customer"))


def email_of(event: dict[str, Any]) -> str | None:
    """The payer's email where this event type carries one, in Stripe's preference order."""
    obj = object_of(event)
    kind = obj.get("object")
    candidates: list[Any]
    if is_customer_event(event) or kind == "customer":
        candidates = [obj.get("email")]
    elif kind == "invoice":
        candidates = [obj.get("customer_email")]
    elif kind == "charge":
        candidates = [_dig(obj, "billing_details", "email"), obj.get("receipt_email")]
    elif kind == "payment_intent":
        candidates = [
            _dig(obj, "last_payment_error", "payment_method", "billing_details", "email"),
            obj.get("receipt_email"),
        ]
    elif kind == "checkout.session":
        candidates = [_dig(obj, "customer_details", "email"), obj.get("customer_email")]
    else:
        # Subscriptions, disputes, refunds...: no email in the payload; an expanded
        # customer object (never sent by Stripe, but seen in hand-made events) counts.
        candidates = [_dig(obj, "customer", "email")]
    for candidate in candidates:
        email = _email(candidate)
        if email:
            return email
    return None


def previous_email_of(event: dict[str, Any]) -> str | None:
    """The customer's old email on a customer.updated that changed it."""
    return _email(previous_attributes_of(event).get("email"))


# Fields that moved between API versions -------------------------------------------------


def subscription_id_of_invoice(invoice: dict[str, Any]) -> str | None:
    """Invoice's subscription: `parent.subscription_details.subscription` (basil+),
    else the pre-basil top-level `subscription`."""
    from_parent = _id(_dig(invoice, "parent", "subscription_details", "subscription"))
    return from_parent or _id(invoice.get("subscription"))


def subscription_items_of(subscription: dict[str, Any]) -> list[dict[str, Any]]:
    """`items.data` of a subscription (a list of dicts, possibly empty)."""
    items = _dig(subscription, "items", "data")
    if not isinstance(items, list):
        return []
    return [item for item in items if isinstance(item, dict)]


def _period_bound(subscription: dict[str, Any], key: str, pick: Any) -> int | None:
    values = [item.get(key) for item in subscription_items_of(subscription)]
    ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
    if ints:
        return int(pick(ints))
    top = subscription.get(key)
    return top if isinstance(top, int) and not isinstance(top, bool) else None


def current_period_start_of(subscription: dict[str, Any]) -> int | None:
    """The earliest `current_period_start` of the items (basil+), else the top-level one."""
    return _period_bound(subscription, "current_period_start", min)


def current_period_end_of(subscription: dict[str, Any]) -> int | None:
    """The latest `current_period_end` of the items (basil+), else the top-level one."""
    return _period_bound(subscription, "current_period_end", max)


# Records for the store ------------------------------------------------------------------


def new_event_from(event: dict[str, Any], raw: str, source: EventSource = "webhook") -> NewEvent:
    """The `NewEvent` to store for a parsed event; `raw` is the body exactly as received."""
    obj = object_of(event)
    return NewEvent(
        stripe_event_id=str(event["id"]),
        type=str(event["type"]),
        livemode=bool(event.get("livemode", False)),
        created=int(event["created"]),
        api_version=_str(event.get("api_version")),
        account=_str(event.get("account")),
        object_id=_id(obj.get("id")),
        customer_id=customer_id_of(event),
        email=email_of(event),
        payload=raw,
        source=source,
    )


def customer_record_from(event: dict[str, Any]) -> CustomerRecord | None:
    """The customer snapshot a customer.created/updated/deleted event carries, else None."""
    if event.get("type") not in CUSTOMER_EVENTS:
        return None
    obj = object_of(event)
    customer_id = _id(obj.get("id"))
    if customer_id is None:
        return None
    return customer_record_from_object(
        obj,
        watermark=int(event.get("created") or 0),
        deleted=event.get("type") == "customer.deleted" or obj.get("deleted") is True,
    )


def customer_record_from_object(
    obj: dict[str, Any], *, watermark: int, deleted: bool | None = None
) -> CustomerRecord:
    """A `CustomerRecord` from a Stripe Customer object (an event's or the API's)."""
    metadata = obj.get("metadata")
    created = obj.get("created")
    livemode = obj.get("livemode")
    return CustomerRecord(
        stripe_customer_id=str(obj["id"]),
        email=_email(obj.get("email")),
        name=_str(obj.get("name")),
        created=created if isinstance(created, int) and not isinstance(created, bool) else None,
        metadata=dict(metadata) if isinstance(metadata, dict) else {},
        deleted=bool(obj.get("deleted")) if deleted is None else deleted,
        livemode=livemode if isinstance(livemode, bool) else None,
        watermark=watermark,
    )
