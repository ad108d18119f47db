"""Deterministic ULIDs: the same Stripe event, workflow and action always give the same id.

Customer.io ignores an event whose `id` it has already received, so a duplicate webhook,
a retry or a replay can never produce a second Customer.io event.

    deterministic_ulid("evt_1", "payment-failed", 1, created=1700000000)
    # -> 26 Crockford base32 characters starting "01HF7YAT00" (the time part)
"""

from __future__ import annotations

import base64
import hashlib

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# base64's base32 alphabet, letter for letter, to Crockford's.
_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _CROCKFORD.encode())
_MAX_TIME_MS = (1 << 48) - 1


def deterministic_ulid(
    stripe_event_id: str, workflow_id: str, action_index: int, *, created: int
) -> str:
    """A ULID whose 48-bit time part is `created` (Unix seconds) in milliseconds and whose
    80-bit random part is the first 10 bytes of SHA-256(event id, workflow id, action index)."""
    time_ms = max(0, min(int(created) * 1000, _MAX_TIME_MS))
    digest = hashlib.sha256(
        f"{stripe_event_id}\x1f{workflow_id}\x1f{action_index}".encode()
    ).digest()
    value = (time_ms << 80) | int.from_bytes(digest[:10], "big")
    # 128 bits as 26 base32 digits: as 160 bits (20 bytes, a whole number of digits without
    # padding) the value is 32 digits, the first 6 of them zero.
    digits = base64.b32encode(value.to_bytes(20, "big")).translate(_TO_CROCKFORD)
    return digits[6:].decode("ascii")
