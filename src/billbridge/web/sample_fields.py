"""The fields a mapping can use, read from a real sample event of the workflow's trigger.

    fields_for(["charge.failed"])   # SampleFields(event_type="charge.failed", fields=[...])
    field.path, field.template, field.example   # "object.amount", "{{ object.amount }}", "2900"

Paths are what a mapping template reads (docs/internals.md): `object.*` (the event's data
object), `previous.*` (previous_attributes), `event.*`, `person.*`. Lists show their first
item (`object.items.data[0].price.id`). A type without a sample gets a generic list.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from billbridge.stripe.samples import SAMPLE_EVENT_TYPES, sample_event

MAX_FIELDS = 400
EXAMPLE_CHARS = 60
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

PERSON_FIELDS: tuple[tuple[str, str], ...] = (
    ("person.identifier", "how Customer.io knows the person (BILLBRIDGE_IDENTIFIER)"),
    ("person.email", "jane.doe@example.com"),
    ("person.customer_id", "cus_…"),
)
EVENT_FIELDS: tuple[str, ...] = ("id", "type", "created", "livemode", "api_version")
GENERIC_OBJECT_FIELDS: tuple[str, ...] = (
    "id",
    "object",
    "customer",
    "amount",
    "currency",
    "status",
    "description",
    "created",
    "livemode",
    "metadata",
)


@dataclass(frozen=True)
class SampleField:
    """One path a template can read, and its value in the sample (shortened)."""

    path: str
    example: str

    @property
    def template(self) -> str:
        return "{{ " + self.path + " }}"


@dataclass(frozen=True)
class SampleFields:
    """The fields offered for a trigger: from a sample of `event_type`, or generic."""

    event_type: str | None  # None: no trigger type has a sample
    fields: list[SampleField]


def _example(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 1] + "…"


def flatten(value: Any, prefix: str) -> Iterable[SampleField]:
    """Every leaf under `value` as (path, example); lists by their first item."""
    if isinstance(value, dict):
        if not value:
            yield SampleField(prefix, "{}")
        for key, item in value.items():
            if _IDENTIFIER.match(key):
                yield from flatten(item, f"{prefix}.{key}")
    elif isinstance(value, list):
        if value:
            yield from flatten(value[0], f"{prefix}[0]")
        else:
            yield SampleField(prefix, "[]")
    else:
        yield SampleField(prefix, _example(value))


def sample_fields(event_type: str) -> list[SampleField]:
    """The fields of a sample `event_type` event. Raises ValueError when none exists."""
    event = sample_event(event_type)
    data = event.get("data", {})
    found: list[SampleField] = list(flatten(data.get("object", {}), "object"))
    found.extend(flatten(data.get("previous_attributes") or {}, "previous"))
    found.extend(SampleField(f"event.{name}", _example(event.get(name))) for name in EVENT_FIELDS)
    found.extend(SampleField(path, example) for path, example in PERSON_FIELDS)
    return [field for field in found if field.path != "previous"][:MAX_FIELDS]


def generic_fields() -> list[SampleField]:
    """Fields most Stripe objects have, for a type without a sample."""
    found = [SampleField(f"object.{name}", "") for name in GENERIC_OBJECT_FIELDS]
    found.extend(SampleField(f"event.{name}", "") for name in EVENT_FIELDS)
    found.extend(SampleField(path, example) for path, example in PERSON_FIELDS)
    return found


def fields_for(event_types: Iterable[str]) -> SampleFields:
    """The fields of the first trigger type that has a sample, else the generic list."""
    for event_type in event_types:
        if event_type in SAMPLE_EVENT_TYPES:
            return SampleFields(event_type, sample_fields(event_type))
    return SampleFields(None, generic_fields())
