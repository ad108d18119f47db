"""Deterministic ULIDs: stable per (event, workflow, action), distinct otherwise, valid ULIDs."""

from __future__ import annotations

import hashlib

import pytest

from billbridge.ids import deterministic_ulid

CROCKFORD = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def _decode(ulid: str) -> int:
    value = 0
    for char in ulid:
        value = value * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(char)
    return value


def test_same_inputs_give_the_same_id() -> None:
    """A duplicate webhook or a replay produces the very same Customer.io event id."""
    first = deterministic_ulid("evt_1", "payment-failed", 1, created=1_700_000_000)
    assert first == deterministic_ulid("evt_1", "payment-failed", 1, created=1_700_000_000)


def test_any_difference_gives_another_id() -> None:
    """Another event, workflow or action index gives another id."""
    ids = {
        deterministic_ulid("evt_1", "wf", 0, created=1_700_000_000),
        deterministic_ulid("evt_2", "wf", 0, created=1_700_000_000),
        deterministic_ulid("evt_1", "wf2", 0, created=1_700_000_000),
        deterministic_ulid("evt_1", "wf", 1, created=1_700_000_000),
    }
    assert len(ids) == 4


def test_it_is_a_ulid_whose_time_part_is_the_stripe_created_time() -> None:
    """26 Crockford characters; the top 48 bits are event.created in milliseconds."""
    ulid = deterministic_ulid("evt_1", "wf", 0, created=1_700_000_000)
    assert len(ulid) == 26
    assert set(ulid) <= CROCKFORD
    assert _decode(ulid) >> 80 == 1_700_000_000_000
    assert ulid[0] in "01234567"  # 128 bits fit: the first character is at most 7


def _ulid_digit_by_digit(stripe_event_id: str, workflow_id: str, index: int, created: int) -> str:
    """The ULID written out five bits at a time: the definition the fast encoding must match."""
    time_ms = max(0, min(created * 1000, (1 << 48) - 1))
    digest = hashlib.sha256(f"{stripe_event_id}\x1f{workflow_id}\x1f{index}".encode()).digest()
    value = (time_ms << 80) | int.from_bytes(digest[:10], "big")
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    return "".join(alphabet[(value >> (5 * shift)) & 0x1F] for shift in reversed(range(26)))


@pytest.mark.parametrize("created", [0, 1, 1_700_000_000, 1_795_000_000, 2**47, 2**60])
def test_same_digits_as_the_ulid_written_out(created: int) -> None:
    for index in range(50):
        event_id = f"evt_{index:024x}"
        expected = _ulid_digit_by_digit(event_id, "payment-failed", index, created)
        actual = deterministic_ulid(event_id, "payment-failed", index, created=created)
        assert actual == expected
        assert len(actual) == 26
