"""The event a store test ingests: `event(n)` is `evt_<n>` about customer `cus_<n>`."""

from __future__ import annotations

from billbridge.store.records import NewEvent


def event(n: int | str, **fields: object) -> NewEvent:
    values: dict[str, object] = {
        "stripe_event_id": f"evt_{n}",
        "type": "customer.created",
        "livemode": False,
        "created": 1_700_000_000,
        "api_version": "2024-06-20",
        "account": None,
        "object_id": f"cus_{n}",
        "customer_id": f"cus_{n}",
        "email": f"person{n}@example.com",
        "payload": f'{{"id": "evt_{n}"}}',
    }
    values.update(fields)
    return NewEvent(**values)  # type: ignore[arg-type]
