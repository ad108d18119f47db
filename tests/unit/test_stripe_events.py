"""Stripe event shape check, customer id / email extraction and sample events."""

from __future__ import annotations

import json
from typing import Any

import pytest

from billbridge.errors import WebhookRejected
from billbridge.stripe.events import (
    current_period_end_of,
    customer_id_of,
    customer_record_from,
    email_of,
    new_event_from,
    parse_event,
    previous_email_of,
    subscription_id_of_invoice,
)
from billbridge.stripe.samples import SAMPLE_EVENT_TYPES, sample_event

CUSTOMER = "cus_Sample12345678"
EMAIL = "jane.doe@example.com"

DEFAULT_TRIGGERS = (
    "customer.created",
    "customer.updated",
    "customer.deleted",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "charge.succeeded",
    "charge.failed",
    "charge.refunded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "charge.dispute.created",
    "checkout.session.completed",
    "invoice.paid",
    "invoice.payment_failed",
)

# Where Stripe puts (customer id, email) per sample type (reference §4.2).
EXPECTED: dict[str, tuple[str | None, str | None]] = {
    "customer.created": (CUSTOMER, EMAIL),
    "customer.updated": (CUSTOMER, EMAIL),
    "customer.deleted": (CUSTOMER, EMAIL),
    "customer.subscription.created": (CUSTOMER, None),
    "customer.subscription.updated": (CUSTOMER, None),
    "customer.subscription.deleted": (CUSTOMER, None),
    "customer.subscription.trial_will_end": (CUSTOMER, None),
    "charge.succeeded": (CUSTOMER, EMAIL),
    "charge.failed": (CUSTOMER, EMAIL),
    "charge.refunded": (CUSTOMER, EMAIL),
    "charge.dispute.created": (None, None),
    "payment_intent.succeeded": (CUSTOMER, None),
    "payment_intent.payment_failed": (CUSTOMER, EMAIL),
    "payment_intent.canceled": (CUSTOMER, None),
    "checkout.session.completed": (CUSTOMER, EMAIL),
    "invoice.paid": (CUSTOMER, EMAIL),
    "invoice.payment_succeeded": (CUSTOMER, EMAIL),
    "invoice.payment_failed": (CUSTOMER, EMAIL),
    "refund.created": (CUSTOMER, None),
}


def _event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": "evt_1",
        "object": "event",
        "type": "customer.created",
        "created": 1700000000,
        "livemode": False,
        "data": {"object": {"id": "cus_1", "object": "customer"}},
    }
    event.update(overrides)
    return event


def _body(event: Any) -> bytes:
    return json.dumps(event).encode()


def _reason(body: bytes) -> str:
    with pytest.raises(WebhookRejected) as caught:
        parse_event(body)
    assert caught.value.status_code == 400
    return caught.value.reason


# parse_event ---------------------------------------------------------------------------


def test_parse_accepts_a_minimal_event() -> None:
    """A minimal well-formed snapshot event parses to the same dict."""
    assert parse_event(_body(_event())) == _event()


@pytest.mark.parametrize("event_type", SAMPLE_EVENT_TYPES)
def test_every_sample_passes_the_shape_check(event_type: str) -> None:
    """Every sample event is a valid Stripe event body."""
    event = sample_event(event_type)
    assert parse_event(_body(event)) == event


@pytest.mark.parametrize("body", [b"{", b"", b"\xff\xfe", b"{'id': 1}"])
def test_parse_rejects_bad_json(body: bytes) -> None:
    """A body that is not JSON (or not UTF-8) is refused as such."""
    assert _reason(body) == "body is not valid JSON"


def test_parse_rejects_thin_events() -> None:
    """A v2.core.event (thin event) is refused with a pointer to snapshot endpoints."""
    thin = {"id": "evt_1", "object": "v2.core.event", "type": "v1.customer.created"}
    reason = _reason(_body(thin))
    assert "thin events (v2.core.event) are not supported" in reason
    assert "snapshot" in reason


@pytest.mark.parametrize(
    ("body", "part"),
    [
        ([1, 2], "not a JSON object"),
        ("evt_1", "not a JSON object"),
        (_event(object="customer"), '"object"'),
        ({k: v for k, v in _event().items() if k != "object"}, '"object"'),
        (_event(id="cus_1"), '"id"'),
        (_event(id=7), '"id"'),
        (_event(type=None), '"type"'),
        (_event(type=""), '"type"'),
        (_event(created="1700000000"), '"created"'),
        (_event(created=True), '"created"'),
        (_event(created=1.5), '"created"'),
        (_event(livemode="false"), '"livemode"'),
        ({k: v for k, v in _event().items() if k != "livemode"}, '"livemode"'),
        (_event(data=None), '"data.object"'),
        (_event(data={"object": "cus_1"}), '"data.object"'),
        (_event(data={}), '"data.object"'),
    ],
)
def test_parse_rejects_wrong_shapes(body: Any, part: str) -> None:
    """Each missing or mistyped envelope field is named in the reason."""
    reason = _reason(_body(body))
    assert reason.startswith("body is not a Stripe event")
    assert part in reason


def test_parse_reason_never_echoes_the_payload() -> None:
    """Refusal reasons do not contain payload values (personal data)."""
    reason = _reason(_body(_event(id="jane@example.com")))
    assert "jane@example.com" not in reason


# customer_id_of / email_of ---------------------------------------------------------------


@pytest.mark.parametrize("event_type", SAMPLE_EVENT_TYPES)
def test_customer_id_and_email_per_sample_type(event_type: str) -> None:
    """Each type yields the customer id and email where Stripe puts them (reference §4.2)."""
    event = sample_event(event_type, customer_id=CUSTOMER, email=EMAIL)
    assert (customer_id_of(event), email_of(event)) == EXPECTED[event_type]


def test_expectations_cover_every_sample_and_default_trigger() -> None:
    """The table above covers every sample type, and samples cover every default trigger."""
    assert set(EXPECTED) == set(SAMPLE_EVENT_TYPES)
    assert set(DEFAULT_TRIGGERS) <= set(SAMPLE_EVENT_TYPES)


def test_charge_prefers_billing_details_then_receipt_email() -> None:
    """Charge: billing_details.email first, receipt_email when it is null."""
    event = sample_event("charge.succeeded", email="bill@example.com")
    event["data"]["object"]["receipt_email"] = "receipt@example.com"
    assert email_of(event) == "bill@example.com"
    event["data"]["object"]["billing_details"]["email"] = None
    assert email_of(event) == "receipt@example.com"
    event["data"]["object"]["receipt_email"] = None
    assert email_of(event) is None


def test_payment_intent_prefers_payment_method_email_then_receipt_email() -> None:
    """PaymentIntent: the failed payment method's billing email, then receipt_email."""
    event = sample_event("payment_intent.payment_failed", email="pm@example.com")
    event["data"]["object"]["receipt_email"] = "receipt@example.com"
    assert email_of(event) == "pm@example.com"
    event["data"]["object"]["last_payment_error"] = None
    assert email_of(event) == "receipt@example.com"


def test_checkout_prefers_customer_details_then_prefill() -> None:
    """Checkout Session: customer_details.email, then the customer_email prefill."""
    event = sample_event("checkout.session.completed", email="details@example.com")
    event["data"]["object"]["customer_email"] = "prefill@example.com"
    assert email_of(event) == "details@example.com"
    event["data"]["object"]["customer_details"] = None
    assert email_of(event) == "prefill@example.com"


def test_guest_checkout_has_no_customer_but_an_email() -> None:
    """A payment-mode session without a Customer still yields the email."""
    event = sample_event("checkout.session.completed", email="guest@example.com")
    event["data"]["object"]["customer"] = None
    assert customer_id_of(event) is None
    assert email_of(event) == "guest@example.com"


def test_expanded_customer_object_gives_its_id() -> None:
    """A `customer` given as an expanded object counts by its id."""
    event = sample_event("customer.subscription.created")
    event["data"]["object"]["customer"] = {"id": "cus_expanded", "email": "x@example.com"}
    assert customer_id_of(event) == "cus_expanded"
    assert email_of(event) == "x@example.com"


def test_previous_email_on_customer_updated() -> None:
    """customer.updated exposes the old email from previous_attributes."""
    event = sample_event("customer.updated", email=EMAIL)
    assert previous_email_of(event) == "jane@oldmail.example.com"
    assert previous_email_of(sample_event("customer.created")) is None


def test_non_customer_types_under_customer_prefix_use_the_customer_field() -> None:
    """customer.subscription.* is about `customer`, not the subscription's own id."""
    event = sample_event("customer.subscription.deleted", customer_id=CUSTOMER)
    assert customer_id_of(event) == CUSTOMER
    assert event["data"]["object"]["id"].startswith("sub_")


# Moved fields ------------------------------------------------------------------------------


def test_invoice_subscription_from_parent_or_top_level() -> None:
    """Invoice subscription id: basil `parent.subscription_details`, else top-level."""
    invoice = sample_event("invoice.paid")["data"]["object"]
    assert (
        subscription_id_of_invoice(invoice)
        == invoice["parent"]["subscription_details"]["subscription"]
    )
    assert subscription_id_of_invoice({"subscription": "sub_old", "parent": None}) == "sub_old"
    assert subscription_id_of_invoice({"id": "in_1"}) is None


def test_current_period_end_from_items_or_top_level() -> None:
    """current_period_end: latest on items (basil+), else the pre-basil top-level field."""
    subscription = sample_event("customer.subscription.created")["data"]["object"]
    expected = subscription["items"]["data"][0]["current_period_end"]
    assert current_period_end_of(subscription) == expected
    assert current_period_end_of({"current_period_end": 123, "items": {"data": []}}) == 123
    assert current_period_end_of({}) is None


# Records ---------------------------------------------------------------------------------


def test_new_event_from_fills_every_field() -> None:
    """NewEvent carries ids, type, mode, created, version, ids and the raw body."""
    event = sample_event("invoice.paid", customer_id=CUSTOMER, email=EMAIL, livemode=True)
    event["account"] = "acct_connected"
    raw = json.dumps(event)
    record = new_event_from(parse_event(raw.encode()), raw, source="reconcile")
    assert record.stripe_event_id == event["id"]
    assert record.type == "invoice.paid"
    assert record.livemode is True
    assert record.created == event["created"]
    assert record.api_version == "2026-10-28.endive"
    assert record.account == "acct_connected"
    assert record.object_id == event["data"]["object"]["id"]
    assert (record.customer_id, record.email) == (CUSTOMER, EMAIL)
    assert record.payload == raw
    assert record.source == "reconcile"


def test_customer_record_from_customer_events() -> None:
    """customer.* events give a snapshot watermarked with event.created."""
    event = sample_event("customer.updated", customer_id=CUSTOMER, email=EMAIL, created=1700000500)
    record = customer_record_from(event)
    assert record is not None
    assert record.stripe_customer_id == CUSTOMER
    assert record.email == EMAIL
    assert record.name == "Jane Doe"
    assert record.metadata == {"account_id": "acct-4821"}
    assert record.deleted is False
    assert record.livemode is False
    assert record.watermark == 1700000500


def test_customer_deleted_record_is_marked_deleted() -> None:
    """customer.deleted gives deleted=True and keeps the last email."""
    record = customer_record_from(sample_event("customer.deleted", email=EMAIL))
    assert record is not None
    assert record.deleted is True
    assert record.email == EMAIL


def test_customer_deleted_without_flag_in_payload_is_still_deleted() -> None:
    """Whether data.object carries deleted:true is unconfirmed; the type decides."""
    event = sample_event("customer.deleted")
    del event["data"]["object"]["deleted"]
    record = customer_record_from(event)
    assert record is not None
    assert record.deleted is True


@pytest.mark.parametrize(
    "event_type",
    [
        t
        for t in SAMPLE_EVENT_TYPES
        if t not in ("customer.created", "customer.updated", "customer.deleted")
    ],
)
def test_no_customer_record_for_other_types(event_type: str) -> None:
    """Only customer.created/updated/deleted produce a customer snapshot."""
    assert customer_record_from(sample_event(event_type)) is None


# Samples ---------------------------------------------------------------------------------


def test_sample_envelope_and_overrides() -> None:
    """sample_event honours id, created, livemode, customer and email; envelope per §6."""
    event = sample_event(
        "charge.succeeded",
        livemode=True,
        event_id="evt_given",
        created=1700000000,
        customer_id="cus_given",
        email="given@example.com",
    )
    assert event["id"] == "evt_given"
    assert event["object"] == "event"
    assert event["api_version"] == "2026-10-28.endive"
    assert event["created"] == 1700000000
    assert event["livemode"] is True
    assert event["data"]["object"]["livemode"] is True
    assert event["pending_webhooks"] == 1
    assert set(event["request"]) == {"id", "idempotency_key"}
    assert customer_id_of(event) == "cus_given"
    assert email_of(event) == "given@example.com"


def test_samples_have_fresh_random_ids() -> None:
    """Two samples of one type differ in event and object ids."""
    first, second = sample_event("invoice.paid"), sample_event("invoice.paid")
    assert first["id"] != second["id"]
    assert first["id"].startswith("evt_")
    assert first["data"]["object"]["id"] != second["data"]["object"]["id"]


def test_unknown_sample_type_lists_supported_ones() -> None:
    """An unknown type is a ValueError naming the supported types."""
    with pytest.raises(ValueError, match="no sample") as caught:
        sample_event("plan.created")
    assert "invoice.paid" in str(caught.value)


def test_subscription_updated_sample_is_a_plan_change() -> None:
    """previous_attributes.items holds a different price than the current items."""
    event = sample_event("customer.subscription.updated")
    now = event["data"]["object"]["items"]["data"][0]["price"]
    before = event["data"]["previous_attributes"]["items"]["data"][0]["price"]
    assert now["id"] != before["id"]
    assert now["unit_amount"] > before["unit_amount"]
    assert now["product"].startswith("prod_")


def test_failure_and_cancellation_samples_carry_their_reasons() -> None:
    """charge.failed, subscription.deleted, dispute and PI cancel carry Stripe's reason fields."""
    failed = sample_event("charge.failed")["data"]["object"]
    assert failed["status"] == "failed"
    assert failed["failure_code"] == "card_declined"
    assert failed["failure_message"]
    canceled = sample_event("customer.subscription.deleted")["data"]["object"]
    assert canceled["status"] == "canceled"
    assert canceled["cancellation_details"]["reason"] == "cancellation_requested"
    assert sample_event("charge.dispute.created")["data"]["object"]["reason"] == "fraudulent"
    intent = sample_event("payment_intent.canceled")["data"]["object"]
    assert intent["cancellation_reason"] == "abandoned"
    refunded = sample_event("charge.refunded")["data"]["object"]
    assert refunded["refunded"] is True
    assert refunded["amount_refunded"] == refunded["amount"]


def test_samples_are_json_and_use_minor_units() -> None:
    """Every sample serialises to JSON; amounts are integers in cents, currency usd."""
    for event_type in SAMPLE_EVENT_TYPES:
        obj = sample_event(event_type)["data"]["object"]
        json.dumps(obj)
        if "amount" in obj:
            assert isinstance(obj["amount"], int)
            assert obj["currency"] == "usd"
