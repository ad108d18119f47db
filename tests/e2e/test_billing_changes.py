"""Semantic events and payment failures end to end: once per Stripe change, whatever the order."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from billbridge.stripe.samples import sample_event
from tests.e2e.test_billing_flow import _app
from tests.e2e.test_delivery_flow import Running, cio, stripe_api
from tests.fakes.customerio import FakeCustomerIO
from tests.fakes.stripe_api import FakeStripe

__all__ = ["cio", "stripe_api"]  # fixtures shared with test_delivery_flow

DAY = 86_400


@pytest.fixture
def running(tmp_path: Path, cio: FakeCustomerIO, stripe_api: FakeStripe) -> Iterator[Running]:
    with _app(tmp_path, cio, stripe_api) as run:
        yield run


def _named(cio: FakeCustomerIO, name: str) -> list[dict[str, Any]]:
    return [e for e in cio.events if e["name"] == name]


def _post_all(running: Running, *events: dict[str, Any]) -> None:
    for event in events:
        running.post_event(event)
    for event in events:
        running.wait_final(event["id"])


def _attempt_with_charge(customer_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """charge.failed and payment_intent.payment_failed of one declined card attempt."""
    charge = sample_event("charge.failed", customer_id=customer_id, email="d@example.com")
    intent = sample_event(
        "payment_intent.payment_failed", customer_id=customer_id, email="d@example.com"
    )
    charge_obj, intent_obj = charge["data"]["object"], intent["data"]["object"]
    intent_obj["id"] = charge_obj["payment_intent"]
    intent_obj["latest_charge"] = charge_obj["id"]
    intent_obj["last_payment_error"].update(
        charge=charge_obj["id"],
        code="card_declined",
        decline_code="insufficient_funds",
        message="Your card has insufficient funds.",
        type="card_error",
    )
    return charge, intent


@pytest.mark.parametrize("intent_first", [False, True])
def test_one_payment_failed_per_attempt_in_either_order(
    running: Running, intent_first: bool
) -> None:
    """A declined card sends charge.failed and payment_intent.payment_failed: one
    payment_failed whichever arrives first (and duplicates add none); a failed 3-D Secure
    authentication (no charge) sends payment_failed with Stripe's code and message."""
    customer_id = f"cus_Failed{int(intent_first)}"
    charge, intent = _attempt_with_charge(customer_id)
    first, second = (intent, charge) if intent_first else (charge, intent)
    _post_all(running, first, copy.deepcopy(first), second)
    (sent,) = _named(running.cio, "payment_failed")
    assert sent["data"]["stripe_event_id"] == charge["id"]
    assert sent["data"]["failure_code"] == "card_declined"
    no_charge = sample_event("payment_intent.payment_failed", customer_id=customer_id)
    no_charge["data"]["object"]["last_payment_error"]["decline_code"] = "generic_decline"
    _post_all(running, no_charge)
    failures = _named(running.cio, "payment_failed")
    assert len(failures) == 2
    data = failures[1]["data"]
    assert data["stripe_event_id"] == no_charge["id"]
    assert data["failure_code"] == "payment_intent_authentication_failure"
    assert data["decline_code"] == "generic_decline"
    assert data["failure_message"].startswith("The provided PaymentMethod has failed")
    assert data["payment_intent"] == no_charge["data"]["object"]["id"]


def _subscription_event(
    event_type: str, customer_id: str, sub_id: str, created: int, **fields: Any
) -> dict[str, Any]:
    event = sample_event(event_type, customer_id=customer_id, created=created)
    obj = event["data"]["object"]
    obj["id"] = sub_id
    previous = fields.pop("previous", None)
    obj.update(fields)
    if previous is not None:
        event["data"]["previous_attributes"] = previous
    return event


def test_pause_resume_and_interval_change_are_sent_once(running: Running) -> None:
    """pause_collection set then cleared, and a monthly-to-yearly switch at equal MRR, each
    send their event once, also when Stripe delivers the webhook twice."""
    customer_id, sub_id, at = "cus_Pause", "sub_Pause", 1_700_000_000
    pause = {"behavior": "void", "resumes_at": None}
    paused = _subscription_event(
        "customer.subscription.updated",
        customer_id,
        sub_id,
        at,
        pause_collection=pause,
        previous={"pause_collection": None},
    )
    resumed = _subscription_event(
        "customer.subscription.updated",
        customer_id,
        sub_id,
        at + 10,
        pause_collection=None,
        previous={"pause_collection": pause},
    )
    monthly = copy.deepcopy(resumed["data"]["object"]["items"])
    yearly = copy.deepcopy(monthly)
    price = yearly["data"][0]["price"]
    price.update(id="price_yearly", unit_amount=price["unit_amount"] * 12)
    price["recurring"]["interval"] = "year"
    switched = _subscription_event(
        "customer.subscription.updated",
        customer_id,
        sub_id,
        at + 20,
        items=yearly,
        previous={"items": monthly},
    )
    _post_all(running, paused, copy.deepcopy(paused), resumed, switched, copy.deepcopy(switched))
    (pause_sent,) = _named(running.cio, "subscription_paused")
    assert pause_sent["data"]["after"]["pause_behavior"] == "void"
    (resume_sent,) = _named(running.cio, "subscription_resumed")
    assert resume_sent["data"]["before"]["pause_behavior"] == "void"
    (interval_sent,) = _named(running.cio, "subscription_interval_changed")
    assert interval_sent["data"]["before"]["interval"] == "month"
    assert interval_sent["data"]["after"]["interval"] == "year"
    assert interval_sent["data"]["before"]["mrr"] == interval_sent["data"]["after"]["mrr"]
    assert _named(running.cio, "subscription_upgraded") == []
    assert _named(running.cio, "subscription_downgraded") == []


def test_trial_converted_on_the_first_paid_invoice_after_the_trial(running: Running) -> None:
    """The invoice whose period starts at the trial's end, paid, sends trial_converted once;
    the next period's invoice and a replayed duplicate send nothing more."""
    customer_id, sub_id, start = "cus_Convert", "sub_Convert", 1_700_000_000
    trial_end = start + 14 * DAY
    trialing = _subscription_event(
        "customer.subscription.created",
        customer_id,
        sub_id,
        start,
        status="trialing",
        trial_start=start,
        trial_end=trial_end,
    )
    _post_all(running, trialing)

    def paid_invoice(period_start: int) -> dict[str, Any]:
        event = sample_event("invoice.paid", customer_id=customer_id, created=period_start + 60)
        invoice = event["data"]["object"]
        invoice["parent"]["subscription_details"]["subscription"] = sub_id
        invoice["period_end"] = period_start
        line = invoice["lines"]["data"][0]
        line["period"] = {"start": period_start, "end": period_start + 30 * DAY}
        return event

    converted, renewal = paid_invoice(trial_end), paid_invoice(trial_end + 30 * DAY)
    _post_all(running, converted, copy.deepcopy(converted), renewal)
    (sent,) = _named(running.cio, "trial_converted")
    assert sent["data"]["stripe_event_id"] == converted["id"]
    assert sent["data"]["before"] == {"status": "trialing", "trial_end": trial_end}
    assert sent["data"]["after"]["amount_paid"] == converted["data"]["object"]["amount_paid"]
