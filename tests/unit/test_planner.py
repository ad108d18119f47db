"""The planner: the exact Customer.io request every default workflow action produces."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest

from billbridge.billing.profile import absent_attributes, profile_from_state
from billbridge.billing.projection import state_of_objects
from billbridge.customerio.requests import CioRequest
from billbridge.customerio.v2 import to_batch_operation
from billbridge.ids import deterministic_ulid
from billbridge.workflows.defaults import default_workflows
from billbridge.workflows.model import Workflow, validate_workflow
from billbridge.workflows.planner import Skip, build_context, plan_action
from billbridge.workflows.templates import TemplateError

EVENT_ID = "evt_1QJaneTestEvent0001"
CREATED = 1_767_225_600  # 2026-01-01T00:00:00Z
CUS = "cus_QJaneDoe0001"
EMAIL = "jane@example.com"
SUB = "sub_1QJaneProPlan01"
PERIOD_END = 1_769_904_000
CUSTOMER_CREATED = 1_767_000_000


@dataclass(frozen=True)
class FakePerson:
    """Shaped like billbridge.identity.Person."""

    identifier: str
    customer_id: str | None
    email: str | None
    customer: dict[str, Any] = field(default_factory=dict)


JANE = FakePerson(identifier=CUS, customer_id=CUS, email=EMAIL)


# Builders: small Stripe objects with the fields and shapes of Stripe's fixtures --------------


def _event(
    event_type: str, obj: dict[str, Any], previous: dict[str, Any] | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {"object": obj}
    if previous is not None:
        data["previous_attributes"] = previous
    return {
        "id": EVENT_ID,
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": CREATED,
        "data": data,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": "req_1", "idempotency_key": None},
        "type": event_type,
    }


def _customer() -> dict[str, Any]:
    return {
        "id": CUS,
        "object": "customer",
        "balance": 0,
        "created": CUSTOMER_CREATED,
        "currency": "usd",
        "default_source": None,
        "delinquent": False,
        "description": None,
        "email": EMAIL,
        "livemode": False,
        "metadata": {"app_user_id": "user_42"},
        "name": "Jane Doe",
        "phone": None,
    }


def _price(price_id: str, product: str, amount: int) -> dict[str, Any]:
    return {
        "id": price_id,
        "object": "price",
        "active": True,
        "currency": "usd",
        "product": product,
        "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
        "type": "recurring",
        "unit_amount": amount,
    }


def _items(price: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {
                "id": "si_1QJaneItem01",
                "object": "subscription_item",
                "current_period_end": PERIOD_END,
                "current_period_start": CREATED,
                "price": price,
                "quantity": 1,
                "subscription": SUB,
            }
        ],
        "has_more": False,
    }


PRO = _price("price_1QProMonthly", "prod_QPro", 2900)
BASIC = _price("price_1QBasicMonthly", "prod_QBasic", 900)


def _subscription(status: str = "active") -> dict[str, Any]:
    return {
        "id": SUB,
        "object": "subscription",
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "created": CREATED,
        "currency": "usd",
        "customer": CUS,
        "ended_at": None,
        "items": _items(PRO),
        "latest_invoice": "in_1QJane0001",
        "livemode": False,
        "metadata": {},
        "status": status,
        "trial_end": None,
        "trial_start": None,
    }


def _card_charge(status: str) -> dict[str, Any]:
    return {
        "id": "ch_1QJane0001",
        "object": "charge",
        "amount": 2900,
        "amount_captured": 2900,
        "amount_refunded": 0,
        "billing_details": {"email": EMAIL, "name": "Jane Doe"},
        "created": CREATED,
        "currency": "usd",
        "customer": CUS,
        "description": "Subscription creation",
        "failure_code": None,
        "failure_message": None,
        "livemode": False,
        "outcome": {"reason": None, "risk_level": "normal", "type": "authorized"},
        "paid": status == "succeeded",
        "payment_intent": "pi_1QJane0001",
        "payment_method_details": {"card": {"brand": "visa", "last4": "4242"}, "type": "card"},
        "receipt_email": EMAIL,
        "receipt_url": "https://pay.stripe.com/receipts/payment/ch_1QJane0001",
        "refunded": False,
        "status": status,
    }


def _failed_charge() -> dict[str, Any]:
    charge = _card_charge("failed")
    charge.update(
        amount_captured=0,
        failure_code="card_declined",
        failure_message="Your card has insufficient funds.",
        outcome={"reason": "insufficient_funds", "risk_level": "normal", "type": "issuer_declined"},
        receipt_url=None,
    )
    return charge


def _refunded_charge() -> dict[str, Any]:
    charge = _card_charge("succeeded")
    charge.update(amount_refunded=2900, refunded=True)
    return charge


def _payment_intent() -> dict[str, Any]:
    return {
        "id": "pi_1QJane0002",
        "object": "payment_intent",
        "amount": 2900,
        "amount_received": 0,
        "canceled_at": CREATED,
        "cancellation_reason": "abandoned",
        "currency": "usd",
        "customer": CUS,
        "description": None,
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "status": "canceled",
    }


def _dispute() -> dict[str, Any]:
    return {
        "id": "dp_1QJane0001",
        "object": "dispute",
        "amount": 2900,
        "charge": "ch_1QJane0001",
        "created": CREATED,
        "currency": "usd",
        "evidence_details": {"due_by": 1_768_003_199, "has_evidence": False, "past_due": False},
        "livemode": False,
        "payment_intent": "pi_1QJane0001",
        "reason": "fraudulent",
        "status": "needs_response",
    }


def _checkout_session() -> dict[str, Any]:
    return {
        "id": "cs_test_a1QJane0001",
        "object": "checkout.session",
        "amount_subtotal": 2900,
        "amount_total": 2900,
        "client_reference_id": None,
        "currency": "usd",
        "customer": CUS,
        "customer_details": {"email": EMAIL, "name": "Jane Doe", "phone": None},
        "customer_email": None,
        "invoice": "in_1QJane0001",
        "livemode": False,
        "metadata": {},
        "mode": "subscription",
        "payment_intent": None,
        "payment_status": "paid",
        "status": "complete",
        "subscription": SUB,
    }


def _invoice(*, paid: bool) -> dict[str, Any]:
    return {
        "id": "in_1QJane0001",
        "object": "invoice",
        "amount_due": 2900,
        "amount_paid": 2900 if paid else 0,
        "amount_remaining": 0 if paid else 2900,
        "attempt_count": 1,
        "billing_reason": "subscription_cycle",
        "currency": "usd",
        "customer": CUS,
        "customer_email": EMAIL,
        "hosted_invoice_url": "https://invoice.stripe.com/i/acct_1/test_1",
        "invoice_pdf": "https://pay.stripe.com/invoice/acct_1/test_1/pdf",
        "livemode": False,
        "next_payment_attempt": None if paid else 1_767_484_800,
        "number": "7FE1103-0002",
        "parent": {
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": SUB},
            "type": "subscription_details",
        },
        "period_end": CREATED,
        "period_start": CREATED - 2_678_400,
        "status": "paid" if paid else "open",
    }


def _canceled_subscription() -> dict[str, Any]:
    sub = _subscription("canceled")
    sub.update(
        canceled_at=CREATED,
        ended_at=CREATED,
        cancellation_details={
            "comment": None,
            "feedback": "too_expensive",
            "reason": "cancellation_requested",
        },
    )
    return sub


EVENTS: dict[str, dict[str, Any]] = {
    "customer.created": _event("customer.created", _customer()),
    "customer.updated": _event(
        "customer.updated", {**_customer(), "delinquent": True}, {"delinquent": False}
    ),
    "customer.deleted": _event("customer.deleted", _customer()),
    "customer.subscription.created": _event("customer.subscription.created", _subscription()),
    "customer.subscription.updated": _event(
        "customer.subscription.updated",
        _subscription(),
        {"items": _items(BASIC), "status": "trialing"},
    ),
    "customer.subscription.deleted": _event(
        "customer.subscription.deleted", _canceled_subscription()
    ),
    "charge.succeeded": _event("charge.succeeded", _card_charge("succeeded")),
    "charge.failed": _event("charge.failed", _failed_charge()),
    "charge.refunded": _event(
        "charge.refunded", _refunded_charge(), {"amount_refunded": 0, "refunded": False}
    ),
    "payment_intent.canceled": _event("payment_intent.canceled", _payment_intent()),
    "charge.dispute.created": _event("charge.dispute.created", _dispute()),
    "checkout.session.completed": _event("checkout.session.completed", _checkout_session()),
    "invoice.paid": _event("invoice.paid", _invoice(paid=True)),
    "invoice.payment_failed": _event("invoice.payment_failed", _invoice(paid=False)),
}

# What each default action must send for the events above ------------------------------------

_BASE = {"stripe_event_id": EVENT_ID, "livemode": False}
# Identify bodies: email and stripe_customer_id, then the billing profile (SPEC §4).
_SUB_ATTRIBUTES = {
    "stripe_customer_id": CUS,
    "subscription_id": SUB,
    "subscription_status": "active",
    "plan_price_id": "price_1QProMonthly",
    "plan_product_id": "prod_QPro",
    "plan_interval": "month",
    "plan_amount": 2900,
    "mrr": 2900,
    "metered_items_count": 0,
    "currency": "usd",
    "current_period_end": PERIOD_END,
    "cancel_at_period_end": False,
}
_CUSTOMER_ATTRIBUTES = {
    "name": "Jane Doe",
    "created_at": CUSTOMER_CREATED,
    "currency": "usd",
    "delinquent": False,
}
_PAID_ATTRIBUTES = {
    "total_spent": 2900,
    "payments_count": 1,
    "first_payment_at": CREATED,
    "last_payment_at": CREATED,
    "failed_payments_count": 0,
    "disputes_count": 0,
    "currency": "usd",
}
_SUB_DATA = {
    "status": "active",
    "price_id": "price_1QProMonthly",
    "product_id": "prod_QPro",
    "interval": "month",
    "unit_amount": 2900,
    "quantity": 1,
    "currency": "usd",
    "current_period_end": PERIOD_END,
    "cancel_at_period_end": False,
}
_CHARGE_DATA = {
    "amount": 2900,
    "currency": "usd",
    "status": "succeeded",
    "description": "Subscription creation",
    "payment_intent": "pi_1QJane0001",
    "receipt_url": "https://pay.stripe.com/receipts/payment/ch_1QJane0001",
    "card_brand": "visa",
    "card_last4": "4242",
}
_INVOICE_DATA = {
    "number": "7FE1103-0002",
    "amount_due": 2900,
    "currency": "usd",
    "billing_reason": "subscription_cycle",
    "attempt_count": 1,
    "hosted_invoice_url": "https://invoice.stripe.com/i/acct_1/test_1",
    "invoice_pdf": "https://pay.stripe.com/invoice/acct_1/test_1/pdf",
    "period_start": CREATED - 2_678_400,
    "period_end": CREATED,
    "subscription": SUB,
}

# (workflow id, expected identify attributes or None, event name, event data or None)
EXPECTED: dict[str, tuple[str, dict[str, Any] | None, str | None, dict[str, Any] | None]] = {
    "customer.created": (
        "customer-created",
        _CUSTOMER_ATTRIBUTES,
        "customer_created",
        {"email": EMAIL, "name": "Jane Doe", "created": CUSTOMER_CREATED, "currency": "usd"},
    ),
    "customer.updated": (
        "customer-updated",
        {**_CUSTOMER_ATTRIBUTES, "delinquent": True},
        None,
        None,
    ),
    "customer.deleted": (
        "customer-deleted",
        None,
        "customer_deleted",
        {"email": EMAIL, "name": "Jane Doe"},
    ),
    "customer.subscription.created": (
        "subscription-created",
        _SUB_ATTRIBUTES,
        "subscription_created",
        _SUB_DATA,
    ),
    "customer.subscription.updated": (
        "subscription-updated",
        _SUB_ATTRIBUTES,
        "subscription_updated",
        {**_SUB_DATA, "previous_status": "trialing", "previous_price_id": "price_1QBasicMonthly"},
    ),
    "customer.subscription.deleted": (
        "subscription-canceled",
        {**_SUB_ATTRIBUTES, "subscription_status": "canceled", "canceled_at": CREATED, "mrr": 0},
        "subscription_canceled",
        {
            **_SUB_DATA,
            "status": "canceled",
            "canceled_at": CREATED,
            "ended_at": CREATED,
            "cancellation_reason": "cancellation_requested",
            "cancellation_feedback": "too_expensive",
        },
    ),
    "charge.succeeded": ("payment-succeeded", _PAID_ATTRIBUTES, "payment_succeeded", _CHARGE_DATA),
    "charge.failed": (
        "payment-failed",
        {
            "total_spent": 0,
            "payments_count": 0,
            "failed_payments_count": 1,
            "last_payment_failed_at": CREATED,
            "disputes_count": 0,
            "currency": "usd",
        },
        "payment_failed",
        {
            "amount": 2900,
            "currency": "usd",
            "status": "failed",
            "description": "Subscription creation",
            "payment_intent": "pi_1QJane0001",
            "card_brand": "visa",
            "card_last4": "4242",
            "failure_code": "card_declined",
            "failure_message": "Your card has insufficient funds.",
            "decline_code": "insufficient_funds",
        },
    ),
    "charge.refunded": (
        "charge-refunded",
        {**_PAID_ATTRIBUTES, "total_spent": 0},
        "charge_refunded",
        {**_CHARGE_DATA, "amount_refunded": 2900, "refunded": True, "previous_amount_refunded": 0},
    ),
    "payment_intent.canceled": (
        "payment-intent-canceled",
        {},
        "payment_intent_canceled",
        {
            "amount": 2900,
            "currency": "usd",
            "status": "canceled",
            "cancellation_reason": "abandoned",
            "canceled_at": CREATED,
        },
    ),
    "charge.dispute.created": (
        "dispute-created",
        {"disputes_count": 1},
        "dispute_created",
        {
            "amount": 2900,
            "currency": "usd",
            "reason": "fraudulent",
            "status": "needs_response",
            "charge": "ch_1QJane0001",
            "payment_intent": "pi_1QJane0001",
            "evidence_due_by": 1_768_003_199,
        },
    ),
    "checkout.session.completed": (
        "checkout-completed",
        {"name": "Jane Doe"},
        "checkout_completed",
        {
            "mode": "subscription",
            "status": "complete",
            "payment_status": "paid",
            "amount_subtotal": 2900,
            "amount_total": 2900,
            "currency": "usd",
            "subscription": SUB,
            "invoice": "in_1QJane0001",
        },
    ),
    "invoice.paid": (
        "invoice-paid",
        {},
        "invoice_paid",
        {**_INVOICE_DATA, "status": "paid", "amount_paid": 2900, "amount_remaining": 0},
    ),
    "invoice.payment_failed": (
        "invoice-payment-failed",
        {},
        "invoice_payment_failed",
        {
            **_INVOICE_DATA,
            "status": "open",
            "amount_paid": 0,
            "amount_remaining": 2900,
            "next_payment_attempt": 1_767_484_800,
        },
    ),
}

# One default per SPEC §4 table row; the semantic-event defaults (filtered) are tested in
# tests/integration/test_semantic_events.py.
DEFAULTS = {
    workflow.trigger.events[0]: workflow
    for workflow in default_workflows()
    if workflow.filter is None
}
# Defaults whose profile identify follows the event (the event keeps action index 0).
PROFILE_AFTER = frozenset(
    {
        "charge.succeeded",
        "charge.failed",
        "charge.refunded",
        "payment_intent.canceled",
        "charge.dispute.created",
        "invoice.paid",
        "invoice.payment_failed",
    }
)


def _profile(event: dict[str, Any]) -> dict[str, Any]:
    """The billing profile a projection holding only this event's object gives Jane."""
    state = state_of_objects([event["data"]["object"]], watermark=event["created"])
    return profile_from_state(CUS, state)


def _expected_requests(event_type: str) -> list[CioRequest | Skip]:
    workflow_id, attributes, name, data = EXPECTED[event_type]
    obj = EVENTS[event_type]["data"]["object"]
    requests: list[CioRequest | Skip] = []
    identify = CioRequest(
        api="track",
        method="PUT",
        path=f"/api/v1/customers/{CUS}",
        body={"email": EMAIL, "stripe_customer_id": CUS, **(attributes or {})},
    )
    if attributes is not None and event_type not in PROFILE_AFTER:
        requests.append(identify)
    if name is not None and data is not None:
        body = {
            "name": name,
            "id": deterministic_ulid(EVENT_ID, workflow_id, len(requests), created=CREATED),
            "timestamp": CREATED,
            "data": {**data, **_BASE, "stripe_object_id": obj["id"]},
        }
        requests.append(
            CioRequest(
                api="track", method="POST", path=f"/api/v1/customers/{CUS}/events", body=body
            )
        )
    if event_type in PROFILE_AFTER:
        requests.append(identify)
    if event_type == "customer.deleted":
        requests.append(
            Skip("BILLBRIDGE_CUSTOMER_DELETED_POLICY is keep: the person and attributes stay")
        )
    return requests


def test_the_defaults_are_the_spec_table() -> None:
    """One default workflow per SPEC §4 row, with the table's trigger and event name."""
    assert sorted(DEFAULTS) == sorted(EXPECTED)
    assert [w.id for w in default_workflows()] == [
        "customer-created",
        "customer-updated",
        "customer-deleted",
        "subscription-created",
        "subscription-updated",
        "subscription-canceled",
        "payment-succeeded",
        "payment-failed",
        "payment-intent-failed",
        "charge-refunded",
        "payment-intent-canceled",
        "dispute-created",
        "checkout-completed",
        "invoice-paid",
        "invoice-payment-failed",
        "subscription-upgraded",
        "subscription-downgraded",
        "subscription-interval-changed",
        "subscription-cancel-scheduled",
        "subscription-reactivated",
        "subscription-paused",
        "subscription-resumed",
        "trial-will-end",
        "payment-recovered",
        "trial-converted",
    ]
    for event_type, workflow in DEFAULTS.items():
        assert workflow.id == EXPECTED[event_type][0]
        assert workflow.enabled
        assert workflow.trigger.events == [event_type]
        assert workflow.trigger.mode == "any"


@pytest.mark.parametrize("event_type", sorted(EXPECTED))
def test_default_workflow_plans_exact_requests(event_type: str) -> None:
    """Each action of each default workflow plans exactly the documented request."""
    workflow = DEFAULTS[event_type]
    event = EVENTS[event_type]
    planned = [
        plan_action(workflow, index, event, JANE, profile=_profile(event))
        for index in range(len(workflow.actions))
    ]
    assert planned == _expected_requests(event_type)


def test_event_ids_are_deterministic_ulids() -> None:
    """The Customer.io event id is pinned by (event id, workflow id, action index, created)."""
    request = plan_action(DEFAULTS["charge.failed"], 0, EVENTS["charge.failed"], JANE)
    assert isinstance(request, CioRequest)
    assert request.body is not None
    assert request.body["id"] == "01KDVDNA003VQ8M0DX06V2009K"
    again = plan_action(DEFAULTS["charge.failed"], 0, copy.deepcopy(EVENTS["charge.failed"]), JANE)
    assert again == request


def test_legacy_subscription_period_end_falls_back_to_the_top_level() -> None:
    """Before API basil current_period_end was on the subscription; it is still read."""
    sub = _subscription()
    del sub["items"]["data"][0]["current_period_end"]
    sub["current_period_end"] = 1_770_000_000
    event = _event("customer.subscription.created", sub)
    request = plan_action(
        DEFAULTS["customer.subscription.created"], 0, event, JANE, profile=_profile(event)
    )
    assert isinstance(request, CioRequest)
    assert request.body is not None
    assert request.body["current_period_end"] == 1_770_000_000


def test_legacy_invoice_subscription_falls_back_to_the_top_level() -> None:
    """Before API basil an invoice named its subscription at the top level."""
    invoice = _invoice(paid=True)
    del invoice["parent"]
    invoice["subscription"] = "sub_legacy"
    request = plan_action(DEFAULTS["invoice.paid"], 0, _event("invoice.paid", invoice), JANE)
    assert isinstance(request, CioRequest)
    assert request.body is not None
    assert request.body["data"]["subscription"] == "sub_legacy"


def test_a_radar_block_has_no_decline_code() -> None:
    """decline_code comes only from an issuer decline, never from a Radar block reason."""
    charge = _failed_charge()
    charge["outcome"] = {"reason": "highest_risk_level", "type": "blocked"}
    request = plan_action(DEFAULTS["charge.failed"], 0, _event("charge.failed", charge), JANE)
    assert isinstance(request, CioRequest)
    assert request.body is not None
    assert "decline_code" not in request.body["data"]


def test_identify_without_email_or_customer_sends_only_mapped_attributes() -> None:
    """email and stripe_customer_id are added only when known, never invented."""
    person = FakePerson(identifier="user_42", customer_id=None, email=None)
    workflow = _workflow([{"type": "identify", "attributes": {"plan": "pro"}}])
    request = plan_action(workflow, 0, EVENTS["charge.succeeded"], person)
    assert request == CioRequest(
        api="track", method="PUT", path="/api/v1/customers/user_42", body={"plan": "pro"}
    )


# Hand-written workflows: every action type, identifier modes, filters ----------------------


def _workflow(actions: list[dict[str, Any]], *, filter_: str | None = None) -> Workflow:
    data: dict[str, Any] = {
        "id": "custom",
        "name": "Custom",
        "trigger": {"events": ["charge.succeeded"]},
        "actions": actions,
    }
    if filter_ is not None:
        data["filter"] = filter_
    return validate_workflow(data)


PLUS = FakePerson(identifier="jane+vip@example.com", customer_id=CUS, email="jane+vip@example.com")


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (
            {"type": "delete_person"},
            CioRequest(api="track", method="DELETE", path=f"/api/v1/customers/{CUS}"),
        ),
        (
            {"type": "suppress_person"},
            CioRequest(api="track", method="POST", path=f"/api/v1/customers/{CUS}/suppress"),
        ),
        (
            {"type": "unsuppress_person"},
            CioRequest(api="track", method="POST", path=f"/api/v1/customers/{CUS}/unsuppress"),
        ),
        (
            {"type": "add_to_segment", "segment_id": 7},
            CioRequest(
                api="track",
                method="POST",
                path="/api/v1/segments/7/add_customers",
                body={"ids": [CUS]},
                query={"id_type": "id"},
            ),
        ),
        (
            {"type": "remove_from_segment", "segment_id": 7},
            CioRequest(
                api="track",
                method="POST",
                path="/api/v1/segments/7/remove_customers",
                body={"ids": [CUS]},
                query={"id_type": "id"},
            ),
        ),
    ],
)
def test_person_and_segment_actions(action: dict[str, Any], expected: CioRequest) -> None:
    """Delete, suppress, unsuppress and segment actions address the person by identifier."""
    assert plan_action(_workflow([action]), 0, EVENTS["charge.succeeded"], JANE) == expected


def test_email_identifier_mode_encodes_the_path_and_uses_email_types() -> None:
    """With BILLBRIDGE_IDENTIFIER=email the path is percent-encoded and id_type is email."""
    workflow = _workflow(
        [
            {"type": "identify"},
            {"type": "add_to_segment", "segment_id": 3},
            {"type": "send_email", "transactional_message_id": 5},
            {"type": "trigger_broadcast", "broadcast_id": 11},
        ]
    )
    event = EVENTS["charge.succeeded"]
    planned = [plan_action(workflow, i, event, PLUS, identifier_mode="email") for i in range(4)]
    assert planned[0] == CioRequest(
        api="track",
        method="PUT",
        path="/api/v1/customers/jane%2Bvip%40example.com",
        body={"email": "jane+vip@example.com", "stripe_customer_id": CUS},
    )
    assert planned[1] == CioRequest(
        api="track",
        method="POST",
        path="/api/v1/segments/3/add_customers",
        body={"ids": ["jane+vip@example.com"]},
        query={"id_type": "email"},
    )
    assert isinstance(planned[2], CioRequest)
    assert planned[2].body is not None
    assert planned[2].body["identifiers"] == {"email": "jane+vip@example.com"}
    assert isinstance(planned[3], CioRequest)
    assert planned[3].body == {
        "data": {"stripe_event_id": EVENT_ID},
        "emails": ["jane+vip@example.com"],
    }


def test_metadata_identifier_mode_uses_ids() -> None:
    """With metadata:KEY the identifier is an `id` for segments, sends and broadcasts."""
    person = FakePerson(identifier="user_42", customer_id=CUS, email=EMAIL)
    workflow = _workflow(
        [
            {"type": "add_to_segment", "segment_id": 3},
            {"type": "send_email", "transactional_message_id": 5},
        ]
    )
    event = EVENTS["charge.succeeded"]
    segment = plan_action(workflow, 0, event, person, identifier_mode="metadata:app_user_id")
    send = plan_action(workflow, 1, event, person, identifier_mode="metadata:app_user_id")
    assert isinstance(segment, CioRequest)
    assert segment.query == {"id_type": "id"}
    assert segment.body == {"ids": ["user_42"]}
    assert isinstance(send, CioRequest)
    assert send.body is not None
    assert send.body["identifiers"] == {"id": "user_42"}


def test_send_email_body() -> None:
    """A transactional send renders to, message_data and overrides; it is not idempotent."""
    workflow = _workflow(
        [
            {
                "type": "send_email",
                "transactional_message_id": "payment_receipt",
                "message_data": {
                    "amount": "{{ object.amount }}",
                    "currency": "{{ object.currency | upper }}",
                    "unknown": "{{ object.nope }}",
                },
                "subject": "Receipt for {{ object.amount / 100 }} {{ object.currency | upper }}",
                "from": "Billing <billing@example.com>",
                "body": "{{ object.nope }}",
            }
        ]
    )
    request = plan_action(workflow, 0, EVENTS["charge.succeeded"], JANE)
    assert request == CioRequest(
        api="app",
        method="POST",
        path="/v1/send/email",
        idempotent=False,
        body={
            "transactional_message_id": "payment_receipt",
            "to": EMAIL,
            "identifiers": {"id": CUS},
            "message_data": {"amount": 2900, "currency": "USD", "stripe_event_id": EVENT_ID},
            "subject": "Receipt for 29.0 USD",
            "from": "Billing <billing@example.com>",
        },
    )


def test_send_email_without_an_address_is_skipped() -> None:
    """No email for the person (and no `to` mapping) skips the send with a reason."""
    person = FakePerson(identifier=CUS, customer_id=CUS, email=None)
    workflow = _workflow([{"type": "send_email", "transactional_message_id": 5}])
    assert plan_action(workflow, 0, EVENTS["charge.succeeded"], person) == Skip(
        "no email address to send to"
    )


def test_broadcast_bodies() -> None:
    """A broadcast for the person names its id; for `all` it sends only data."""
    workflow = _workflow(
        [
            {
                "type": "trigger_broadcast",
                "broadcast_id": 12,
                "data": {"amt": "{{ object.amount }}"},
            },
            {"type": "trigger_broadcast", "broadcast_id": 13, "recipients": "all"},
        ]
    )
    event = EVENTS["charge.succeeded"]
    assert plan_action(workflow, 0, event, JANE) == CioRequest(
        api="app",
        method="POST",
        path="/v1/campaigns/12/triggers",
        idempotent=False,
        body={"data": {"amt": 2900, "stripe_event_id": EVENT_ID}, "ids": [CUS]},
    )
    assert plan_action(workflow, 1, event, JANE) == CioRequest(
        api="app",
        method="POST",
        path="/v1/campaigns/13/triggers",
        idempotent=False,
        body={"data": {"stripe_event_id": EVENT_ID}},
    )


def test_track_event_guaranteed_fields_win_over_mapped_ones() -> None:
    """Mapped data cannot replace stripe_event_id, stripe_object_id or livemode."""
    workflow = _workflow(
        [{"type": "track_event", "name": "x", "data": {"stripe_event_id": "forged", "k": 1}}]
    )
    request = plan_action(workflow, 0, EVENTS["charge.succeeded"], JANE)
    assert isinstance(request, CioRequest)
    assert request.body is not None
    assert request.body["data"] == {
        "k": 1,
        "stripe_event_id": EVENT_ID,
        "stripe_object_id": "ch_1QJane0001",
        "livemode": False,
    }


def test_filter_false_skips_with_the_expression() -> None:
    """A filter that does not match skips every action, naming the filter."""
    workflow = _workflow([{"type": "delete_person"}], filter_="object.amount > 100000")
    assert plan_action(workflow, 0, EVENTS["charge.succeeded"], JANE) == Skip(
        "filter did not match: object.amount > 100000"
    )
    workflow = _workflow([{"type": "delete_person"}], filter_="object.amount > 1000")
    assert isinstance(plan_action(workflow, 0, EVENTS["charge.succeeded"], JANE), CioRequest)


def test_template_runtime_errors_raise_with_the_path() -> None:
    """A template that fails while rendering raises TemplateError naming the field."""
    workflow = _workflow(
        [{"type": "track_event", "name": "x", "data": {"bad": "{{ object.amount / 0 }}"}}]
    )
    with pytest.raises(TemplateError) as caught:
        plan_action(workflow, 0, EVENTS["charge.succeeded"], JANE)
    assert caught.value.field_path == "actions.0.data.bad"


def test_an_action_index_out_of_range_is_skipped() -> None:
    """A delivery for an action the workflow no longer has is skipped, not an error."""
    workflow = _workflow([{"type": "delete_person"}])
    planned = plan_action(workflow, 3, EVENTS["charge.succeeded"], JANE)
    assert isinstance(planned, Skip)
    assert "no action 3" in planned.reason


def test_build_context() -> None:
    """The context has event, object, previous ({} when absent), customer and person."""
    person = FakePerson(identifier=CUS, customer_id=CUS, email=EMAIL, customer=_customer())
    context = build_context(EVENTS["charge.refunded"], person)
    assert context["event"]["id"] == EVENT_ID
    assert context["object"]["id"] == "ch_1QJane0001"
    assert context["previous"] == {"amount_refunded": 0, "refunded": False}
    assert context["customer"]["name"] == "Jane Doe"
    assert context["person"] == {"identifier": CUS, "email": EMAIL, "customer_id": CUS}
    assert build_context(EVENTS["charge.succeeded"], JANE)["previous"] == {}


def test_customer_context_is_usable_in_templates() -> None:
    """`customer` (the known Stripe customer) can be mapped into any action."""
    person = FakePerson(identifier=CUS, customer_id=CUS, email=EMAIL, customer=_customer())
    workflow = _workflow(
        [{"type": "identify", "attributes": {"app_user": "{{ customer.metadata.app_user_id }}"}}]
    )
    request = plan_action(workflow, 0, EVENTS["charge.succeeded"], person)
    assert isinstance(request, CioRequest)
    assert request.body == {"email": EMAIL, "stripe_customer_id": CUS, "app_user": "user_42"}


# The same defaults over billbridge.stripe.samples ------------------------------------------


def test_every_default_plans_over_the_shared_samples() -> None:
    """Every default action plans a well-formed request over sample_event() for its type."""
    samples = pytest.importorskip("billbridge.stripe.samples")
    for event_type, workflow in DEFAULTS.items():
        event = samples.sample_event(
            event_type, event_id="evt_sample", created=CREATED, customer_id=CUS, email=EMAIL
        )
        for index, action in enumerate(workflow.actions):
            if action.type == "customer_deleted_policy":
                continue  # keep (the default): nothing to send
            request = plan_action(workflow, index, event, JANE)
            assert isinstance(request, CioRequest), (workflow.id, index)
            assert request.body is not None
            if action.type == "identify":
                assert request.method == "PUT"
                assert request.body["stripe_customer_id"] == CUS
                assert request.body["email"] == EMAIL
            else:
                assert request.path == f"/api/v1/customers/{CUS}/events"
                assert request.body["name"] == EXPECTED[event_type][2]
                assert request.body["timestamp"] == CREATED
                assert request.body["id"] == deterministic_ulid(
                    "evt_sample", workflow.id, index, created=CREATED
                )
                data = request.body["data"]
                assert data["stripe_event_id"] == "evt_sample"
                assert data["stripe_object_id"] == event["data"]["object"]["id"]
                assert data["livemode"] is False
                assert all(value is not None for value in data.values())
                if "amount" in data or "amount_due" in data:
                    assert data["currency"] == "usd"


def test_an_event_without_id_or_created_is_a_value_error() -> None:
    """A malformed event (no id, no integer created) cannot be planned: ValueError."""
    workflow = _workflow([{"type": "track_event", "name": "x"}])
    event = copy.deepcopy(EVENTS["charge.succeeded"])
    event["created"] = "yesterday"
    with pytest.raises(ValueError, match="created"):
        plan_action(workflow, 0, event, JANE)
    del event["id"]
    with pytest.raises(ValueError, match="`id`"):
        plan_action(workflow, 0, event, JANE)


def test_an_identify_with_the_profile_removes_the_attributes_it_no_longer_has() -> None:
    """`profile_removals` are sent as "" (Customer.io's removal form) under the profile;
    a mapped attribute still wins, and identity attributes are never removed."""
    profile = {"stripe_customer_id": CUS, "subscription_status": "active", "mrr": 2900}
    removals = absent_attributes(profile)
    assert "trial_end" in removals
    assert "mrr_by_currency" in removals
    assert not {"email", "name", "created_at", "stripe_customer_id"} & set(removals)
    workflow = _workflow(
        [
            {
                "type": "identify",
                "include_profile": True,
                "attributes": {"canceled_at": "{{ event.created }}", "favourite": "blue"},
            }
        ]
    )
    request = plan_action(
        workflow,
        0,
        EVENTS["charge.succeeded"],
        JANE,
        profile=profile,
        profile_removals=removals,
    )
    assert isinstance(request, CioRequest)
    assert request.body is not None
    body = request.body
    assert body["email"] == EMAIL
    assert body["mrr"] == 2900
    assert body["trial_end"] == ""
    assert body["mrr_by_currency"] == ""
    assert body["canceled_at"] == CREATED  # mapped: the user's value beats the removal
    assert body["favourite"] == "blue"
    assert {key for key, value in body.items() if value == ""} == set(removals) - {"canceled_at"}
    # The same call as a Track v2 batch operation carries the same removals.
    operation = to_batch_operation(request)
    assert operation is not None
    assert operation["attributes"] == body


def test_removals_need_the_profile() -> None:
    """Without `include_profile` (user mappings only) nothing is removed, whatever the
    caller passes; and a removal never shadows a value the profile has."""
    profile = {"stripe_customer_id": CUS, "mrr": 0}
    mapped = _workflow([{"type": "identify", "attributes": {"plan": "{{ profile.mrr }}"}}])
    request = plan_action(
        mapped,
        0,
        EVENTS["charge.succeeded"],
        JANE,
        profile=profile,
        profile_removals=("trial_end", "mrr"),
    )
    assert isinstance(request, CioRequest)
    assert request.body is not None
    assert "" not in request.body.values()
    with_profile = _workflow([{"type": "identify", "include_profile": True}])
    request = plan_action(
        with_profile,
        0,
        EVENTS["charge.succeeded"],
        JANE,
        profile=profile,
        profile_removals=("trial_end", "mrr"),
    )
    assert isinstance(request, CioRequest)
    assert request.body is not None
    assert request.body["mrr"] == 0
    assert request.body["trial_end"] == ""
