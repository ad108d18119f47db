"""What retention and erasure treat as personal data in payloads and error texts."""

from __future__ import annotations

import json

from billbridge.store.personal import payload_stub, personal_values, redact


def test_personal_values_come_from_personal_keys_at_any_depth() -> None:
    """Emails, names, phones and address lines are found nested; ids, amounts and short
    values (a country code) are not."""
    payload = json.dumps(
        {
            "id": "evt_1",
            "data": {
                "object": {
                    "customer_email": "ann@example.com",
                    "customer_name": "Ann Example",
                    "amount": 2900,
                    "shipping": {"address": {"line1": "1 Main Street", "country": "US"}},
                    "billing_details": {"phone": "+15550100", "name": "Ann E."},
                }
            },
        }
    )
    assert personal_values(payload) == {
        "ann@example.com",
        "Ann Example",
        "1 Main Street",
        "+15550100",
        "Ann E.",
    }
    assert personal_values("not json") == set()


def test_redact_replaces_known_values_any_case_and_every_email() -> None:
    """Known values are replaced whatever their case; an unknown email address is too."""
    text = "400: ANN@example.com (Ann Example) conflicts with bob@example.org"
    assert redact(text, {"ann@example.com", "Ann Example"}) == (
        "400: [removed] ([removed]) conflicts with [removed]"
    )
    assert redact(None, {"x"}) is None


def test_the_stub_keeps_only_the_event_identity() -> None:
    """A stub is id, object, type, created and livemode."""
    assert json.loads(payload_stub("evt_9", "charge.failed", 1700000000, True)) == {
        "id": "evt_9",
        "object": "event",
        "type": "charge.failed",
        "created": 1700000000,
        "livemode": True,
    }
