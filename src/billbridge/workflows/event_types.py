"""The Stripe event types a workflow may be triggered by, with their descriptions.

The lists ship inside the package (`event_types.txt`: every type name, one a line;
`event_types.tsv`: type, data object, description for most of them) so validation never
needs the network:

    is_known_event_type("customer.subscription.deleted")  # True
    suggest_event_type("customer.subscription.cancelled")  # "customer.subscription.deleted"
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import cache
from importlib.resources import files


@dataclass(frozen=True)
class EventTypeInfo:
    """One Stripe event type: its name, the type of `data.object`, what it means."""

    name: str
    object_type: str | None
    description: str | None


def _read(resource: str) -> str:
    return files("billbridge.workflows").joinpath(resource).read_text(encoding="utf-8")


@cache
def known_event_types() -> frozenset[str]:
    """Every Stripe event type name Billbridge accepts as a trigger."""
    names = (line.strip() for line in _read("event_types.txt").splitlines())
    return frozenset(name for name in names if name and not name.startswith("#"))


@cache
def event_type_catalog() -> tuple[EventTypeInfo, ...]:
    """All known event types, sorted by name, with object type and description when known."""
    described: dict[str, EventTypeInfo] = {}
    for line in _read("event_types.tsv").splitlines()[1:]:  # the first line is a header
        parts = line.split("\t")
        if len(parts) == 3 and parts[0]:
            described[parts[0]] = EventTypeInfo(parts[0], parts[1] or None, parts[2] or None)
    return tuple(
        described.get(name, EventTypeInfo(name, None, None)) for name in sorted(known_event_types())
    )


def is_known_event_type(name: str) -> bool:
    """True when `name` is exactly a Stripe event type (no wildcards)."""
    return name in known_event_types()


def suggest_event_type(name: str) -> str | None:
    """The closest known event type to a misspelt one, or None when nothing is close."""
    matches = difflib.get_close_matches(name, sorted(known_event_types()), n=1, cutoff=0.75)
    return matches[0] if matches else None
