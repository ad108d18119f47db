"""Personal data in stored text: the stub a payload becomes, the values to redact, redaction.

    stub = payload_stub("evt_1", "charge.failed", 1700000000, True)   # JSON text
    values = personal_values(payload_text)         # emails, names, phones, addresses
    redact("400: bad email ann@example.com", values)  # "400: bad email [removed]"

Pure functions the store's privacy statements use (`store/sql_privacy.py`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson

from billbridge.compact_json import compact_json_text

REMOVED = "[removed]"
# Keys whose string values identify a person in Stripe objects (customer, charge billing
# details, invoice customer_* copies, shipping and addresses).
PERSONAL_KEYS = frozenset(
    {
        "email",
        "name",
        "phone",
        "receipt_email",
        "customer_email",
        "customer_name",
        "customer_phone",
        "line1",
        "line2",
        "postal_code",
        "city",
    }
)
MIN_VALUE_LENGTH = 4  # shorter values ("US", "12") would redact unrelated text
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
_MAX_DEPTH = 64  # payloads are bounded to this nesting at ingest


def pruned_words(reason: str) -> str:
    """Why a stored payload is only a stub, for people (`reason`: retention or erasure)."""
    if reason == "erasure":
        return "its payload was removed (the person's data was erased)"
    return "its payload was removed after BILLBRIDGE_RETENTION_DAYS (retention)"


def payload_stub(stripe_event_id: str, event_type: str, created: int, livemode: bool) -> str:
    """What a pruned or erased payload becomes: the event's identity, no personal data."""
    return compact_json_text(
        {
            "id": stripe_event_id,
            "object": "event",
            "type": event_type,
            "created": created,
            "livemode": livemode,
        }
    )


def personal_values(payload: str | None) -> set[str]:
    """The personal strings in a stored payload (under `PERSONAL_KEYS`, at any depth)."""
    if not payload:
        return set()
    try:
        data = orjson.loads(payload)
    except ValueError:
        return set()
    found: set[str] = set()
    _collect(data, found, 0)
    return found


def _collect(value: Any, found: set[str], depth: int) -> None:
    if depth > _MAX_DEPTH:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if key in PERSONAL_KEYS and isinstance(item, str):
                if len(item.strip()) >= MIN_VALUE_LENGTH:
                    found.add(item.strip())
            else:
                _collect(item, found, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _collect(item, found, depth + 1)


def redact(text: str | None, values: Iterable[str]) -> str | None:
    """`text` with each of `values` (case-insensitive) and any email address replaced."""
    if text is None:
        return None
    for value in sorted({v for v in values if len(v) >= MIN_VALUE_LENGTH}, key=len, reverse=True):
        text = re.sub(re.escape(value), REMOVED, text, flags=re.IGNORECASE)
    return _EMAIL.sub(REMOVED, text)
