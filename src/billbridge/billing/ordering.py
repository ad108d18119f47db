"""The ordering guard's key: where a snapshot stands in its object's history.

Stripe does not deliver events in order and `event.created` has one-second resolution,
so the projection keeps, per object, the snapshot with the greatest key; the key is a
string that sorts like this tuple (all numbers zero-padded):

    subscription  (terminal, watermark, ended_at, canceled_at, started, digest)
    charge        (settled, amount_refunded, watermark, digest)
    refund        (settled, watermark, digest)
    invoice       (status rank, watermark, attempt_count, digest)
    dispute       (closed, watermark, digest)
    customer      (deleted, watermark, digest)

`watermark` is `event.created` (or an API read's time). Facts that Stripe never undoes
come before it, so no snapshot can undo them even with a later timestamp: a subscription
that is `canceled` or `incomplete_expired` stays so (a late `subscription.updated` never
makes it active again), a settled charge never goes back to pending and its refunded
amount only grows, a paid or void invoice stays so, a closed dispute stays closed. Ties
in `created` are broken by the object's own timestamps and progress, and finally by a
digest of the snapshot's values, so the winner never depends on arrival order.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson

_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
_WIDTH = 13  # digits: Unix seconds and minor-unit amounts up to 10**13

TERMINAL_SUBSCRIPTION = frozenset({"canceled", "incomplete_expired"})
_INVOICE_RANK = {"draft": 0, "open": 1, "uncollectible": 2, "paid": 3, "void": 3}
_CLOSED_DISPUTE = frozenset({"won", "lost", "warning_closed", "prevented"})
_SETTLED_REFUND = frozenset({"succeeded", "failed", "canceled"})


def _num(value: Any) -> str:
    number = value if isinstance(value, int) and not isinstance(value, bool) else 0
    return str(max(0, min(number, 10**_WIDTH - 1))).zfill(_WIDTH)


def digest(values: dict[str, Any]) -> str:
    """A short, stable digest of a snapshot's values (the last tie-breaker): SHA-256 of
    their canonical JSON (sorted keys, compact, UTF-8; anything not JSON as its str)."""
    try:
        canonical = orjson.dumps(values, option=_CANONICAL, default=str)
    except TypeError:  # e.g. an integer beyond 64 bits, which only json can write
        canonical = json.dumps(
            values, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False
        ).encode()
    return hashlib.sha256(canonical).hexdigest()[:16]


def order_key(
    kind: str,
    values: dict[str, Any],
    watermark: int,
    *,
    sticky: tuple[str, ...] = (),
    created: int | None = None,
) -> str:
    """The sortable key of a snapshot of `kind` with these projected `values`."""
    status = values.get("status")
    parts: list[str]
    if kind == "subscription":
        parts = [
            "1" if status in TERMINAL_SUBSCRIPTION else "0",
            _num(watermark),
            _num(values.get("ended_at")),
            _num(values.get("canceled_at")),
            "0" if status == "incomplete" else "1",
        ]
    elif kind == "charge":
        parts = [
            "0" if status == "pending" else "1",
            _num(values.get("amount_refunded")),
            _num(watermark),
        ]
    elif kind == "refund":
        parts = ["1" if status in _SETTLED_REFUND else "0", _num(watermark)]
    elif kind == "invoice":
        parts = [
            str(_INVOICE_RANK.get(str(status), 0)),
            _num(watermark),
            _num(values.get("attempt_count")),
        ]
    elif kind == "dispute":
        parts = ["1" if status in _CLOSED_DISPUTE else "0", _num(watermark)]
    else:
        parts = ["1" if "deleted" in sticky else "0", _num(watermark)]
    parts.append(digest({**values, "created": created}))
    return ":".join(parts)
