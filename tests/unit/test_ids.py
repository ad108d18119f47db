"""Deterministic ULIDs: stable per (event, workflow, action), distinct otherwise, valid ULIDs."""

from __future__ import annotations

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
