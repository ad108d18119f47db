"""Billing profiles end to end: the running app, the fake Stripe API and the fake Customer.io."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from billbridge.app import create_app
from billbridge.stripe.samples import sample_event
from tests.e2e.test_delivery_flow import Running, _settings, cio, stripe_api
from tests.fakes.customerio import FakeCustomerIO
from tests.fakes.stripe_api import FakeStripe
from tests.support.auth import AUTH
from tests.support.live_server import serve_app, wait_until

__all__ = ["cio", "stripe_api"]  # fixtures shared with test_delivery_flow

ENRICHED_TRIGGERS = (
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.trial_will_end",
    "charge.succeeded",
    "charge.failed",
    "charge.refunded",
    "payment_intent.canceled",
    "charge.dispute.created",
    "invoice.paid",
    "invoice.payment_failed",
)


@contextmanager
def _app(
    tmp_path: Path, cio: FakeCustomerIO, stripe: FakeStripe, **extra: str
) -> Iterator[Running]:
    settings = _settings(
        tmp_path, cio, STRIPE_API_KEY=stripe.api_key, STRIPE_API_BASE=stripe.base_url, **extra
    )
    app = create_app(settings, run_worker=True)
    with serve_app(app) as url:
        yield Running(url, app.state.services, cio, stripe)


@pytest.fixture
def running(tmp_path: Path, cio: FakeCustomerIO, stripe_api: FakeStripe) -> Iterator[Running]:
    with _app(tmp_path, cio, stripe_api) as run:
        yield run


def _strip_emails(event: dict[str, Any]) -> dict[str, Any]:
    """The event without any email in its payload (as Stripe sends most of them)."""
    obj = event["data"]["object"]
    for key in ("receipt_email", "customer_email", "email"):
        if key in obj:
            obj[key] = None
    for key in ("billing_details", "customer_details"):
        if isinstance(obj.get(key), dict):
            obj[key]["email"] = None
    return event


def _named(cio: FakeCustomerIO, name: str) -> list[dict[str, Any]]:
    return [e for e in cio.events if e["name"] == name]


def _settled(running: Running, *event_ids: str) -> None:
    for event_id in event_ids:
        running.wait_final(event_id)


@pytest.mark.parametrize("event_type", ENRICHED_TRIGGERS)
def test_events_without_an_email_reach_customerio_with_it(
    running: Running, stripe_api: FakeStripe, event_type: str
) -> None:
    """A default-workflow event whose payload has no email still identifies the person with
    the email, read from the Stripe API (then kept in the local table)."""
    customer_id, email = f"cus_Enrich{abs(hash(event_type)) % 10**6}", "enrich@example.com"
    stripe_api.add_customer(customer_id, email=email, name="Enriched")
    event = _strip_emails(sample_event(event_type, customer_id=customer_id, email=email))
    if event_type == "charge.dispute.created":
        stripe_api.add_charge(event["data"]["object"]["charge"], customer=customer_id)
    running.post_event(event)
    detail = running.wait_final(event["id"])
    assert all(d.status in ("succeeded", "skipped") for d in detail.deliveries)
    person = running.cio.person(customer_id)
    assert person is not None
    assert person["email"] == email
    assert person["stripe_customer_id"] == customer_id
    assert running.services.store.get_customer(customer_id) is not None  # cached locally


def test_a_late_update_after_deleted_does_not_reactivate_in_customerio(running: Running) -> None:
    """subscription.updated (active) arriving after subscription.deleted leaves the person's
    subscription_status canceled, and its identify sends the canceled profile."""
    customer_id, email = "cus_LateUpdate", "late@example.com"
    created = sample_event(
        "customer.subscription.created", customer_id=customer_id, email=email, created=1_000
    )
    sub_id = created["data"]["object"]["id"]
    deleted = sample_event(
        "customer.subscription.deleted", customer_id=customer_id, email=email, created=1_200
    )
    deleted["data"]["object"]["id"] = sub_id
    late = sample_event(
        "customer.subscription.updated", customer_id=customer_id, email=email, created=1_100
    )
    late["data"]["object"]["id"] = sub_id
    running.post_event(sample_event("customer.created", customer_id=customer_id, email=email))
    running.post_event(created)
    # Sent before the deletion is stored: an identify carries the profile as of its send,
    # so one sent after it would already say canceled (and the count below would be 0).
    running.wait_final(created["id"])
    running.post_event(deleted)
    _settled(running, deleted["id"])
    running.post_event(late)
    running.wait_final(late["id"])
    person = running.cio.person(customer_id)
    assert person is not None
    assert person["subscription_status"] == "canceled"
    assert person["mrr"] == 0
    assert person["subscription_id"] == sub_id
    late_identify = [
        r
        for r in running.cio.requests
        if r["method"] == "PUT" and r["body"].get("subscription_status") == "active"
    ]
    assert len(late_identify) == 1  # only the one for subscription.created


def test_semantic_events_are_sent_once_with_before_and_after(running: Running) -> None:
    """An upgrade sends subscription_upgraded once, with before/after MRR; a duplicate
    webhook and a replay do not send a second one; the event detail lists the delivery."""
    customer_id, email = "cus_Upgrade", "up@example.com"
    running.post_event(sample_event("customer.created", customer_id=customer_id, email=email))
    event = sample_event("customer.subscription.updated", customer_id=customer_id, email=email)
    running.post_event(event)
    running.post_event(copy.deepcopy(event))  # Stripe's duplicate delivery
    running.wait_final(event["id"])
    replay = httpx.post(f"{running.url}/api/events/{event['id']}/replay", headers=AUTH, timeout=10)
    assert replay.status_code == 200, replay.text
    running.wait_final(event["id"])
    upgraded = _named(running.cio, "subscription_upgraded")
    assert len(upgraded) == 1
    assert upgraded[0]["data"]["before"]["mrr"] == 900
    assert upgraded[0]["data"]["after"]["mrr"] == 2900
    assert upgraded[0]["data"]["stripe_event_id"] == event["id"]
    posted_ids = {
        r["body"]["id"]
        for r in running.cio.requests
        if r["method"] == "POST" and r["body"].get("name") == "subscription_upgraded"
    }
    assert len(posted_ids) == 1  # the replay resent the same deterministic id
    assert _named(running.cio, "subscription_downgraded") == []
    detail = httpx.get(f"{running.url}/api/events/{event['id']}", headers=AUTH, timeout=10)
    assert detail.status_code == 200, detail.text
    by_workflow = {d["workflow_id"]: d["status"] for d in detail.json()["deliveries"]}
    assert by_workflow["subscription-upgraded"] == "succeeded"
    assert by_workflow["subscription-downgraded"] == "skipped"


def test_payment_recovered_after_a_failed_invoice(running: Running) -> None:
    """invoice.paid after invoice.payment_failed for the same invoice sends payment_recovered
    once; a first-time payment does not."""
    customer_id, email = "cus_Recover", "recover@example.com"
    failed = sample_event("invoice.payment_failed", customer_id=customer_id, email=email)
    paid = sample_event("invoice.paid", customer_id=customer_id, email=email)
    paid["data"]["object"]["id"] = failed["data"]["object"]["id"]
    running.post_event(failed)
    running.wait_final(failed["id"])
    running.post_event(paid)
    running.wait_final(paid["id"])
    other = sample_event("invoice.paid", customer_id=customer_id, email=email)
    running.post_event(other)
    running.wait_final(other["id"])
    recovered = _named(running.cio, "payment_recovered")
    assert len(recovered) == 1
    assert recovered[0]["data"]["before"] == {"status": "payment_failed"}
    assert recovered[0]["data"]["after"]["status"] == "paid"
    assert recovered[0]["data"]["stripe_event_id"] == paid["id"]


def test_trial_will_end_is_sent(running: Running) -> None:
    """customer.subscription.trial_will_end becomes trial_will_end with the trial end."""
    event = sample_event(
        "customer.subscription.trial_will_end", customer_id="cus_Trial", email="t@example.com"
    )
    running.post_event(event)
    running.wait_final(event["id"])
    (sent,) = _named(running.cio, "trial_will_end")
    assert sent["data"]["trial_end"] == event["data"]["object"]["trial_end"]
    assert sent["data"]["before"]["status"] == "trialing"


def test_an_email_change_updates_the_same_person_by_email(
    tmp_path: Path, cio: FakeCustomerIO, stripe_api: FakeStripe
) -> None:
    """With BILLBRIDGE_IDENTIFIER=email, customer.updated changing the email addresses the
    person by the old email: one person, now with the new email."""
    with _app(tmp_path, cio, stripe_api, BILLBRIDGE_IDENTIFIER="email") as run:
        created = sample_event("customer.created", customer_id="cus_Mail", email="old@example.com")
        run.post_event(created)
        run.wait_final(created["id"])
        updated = sample_event("customer.updated", customer_id="cus_Mail", email="new@example.com")
        updated["data"]["previous_attributes"] = {"email": "old@example.com"}
        run.post_event(updated)
        run.wait_final(updated["id"])
        assert cio.person("old@example.com") is None or cio.person("old@example.com") == (
            cio.person("new@example.com")
        )
        person = cio.person("new@example.com")
        assert person is not None
        assert person["stripe_customer_id"] == "cus_Mail"
        assert len(cio.people) == 1


def test_an_email_change_keeps_the_customer_id_person(running: Running) -> None:
    """With the default identifier the person stays at the customer id with the new email."""
    created = sample_event("customer.created", customer_id="cus_Mail2", email="a@example.com")
    running.post_event(created)
    running.wait_final(created["id"])
    updated = sample_event("customer.updated", customer_id="cus_Mail2", email="b@example.com")
    updated["data"]["previous_attributes"] = {"email": "a@example.com"}
    running.post_event(updated)
    running.wait_final(updated["id"])
    person = running.cio.person("cus_Mail2")
    assert person is not None
    assert person["email"] == "b@example.com"
    assert len(running.cio.people) == 1


@pytest.mark.parametrize(
    ("policy", "check"),
    [
        ("delete", lambda cio: cio.person("cus_Gone") is None),
        ("suppress", lambda cio: cio.is_suppressed("cus_Gone")),
        ("keep", lambda cio: (cio.person("cus_Gone") or {}).get("email") == "gone@example.com"),
    ],
)
def test_customer_deleted_follows_the_policy(
    tmp_path: Path,
    cio: FakeCustomerIO,
    stripe_api: FakeStripe,
    policy: str,
    check: Callable[[FakeCustomerIO], bool],
) -> None:
    """BILLBRIDGE_CUSTOMER_DELETED_POLICY keep/suppress/delete; with delete or suppress a
    later event for the deleted customer does not re-create the person."""
    with _app(tmp_path, cio, stripe_api, BILLBRIDGE_CUSTOMER_DELETED_POLICY=policy) as run:
        email = "gone@example.com"
        created = sample_event("customer.created", customer_id="cus_Gone", email=email)
        run.post_event(created)
        run.wait_final(created["id"])
        deleted = sample_event("customer.deleted", customer_id="cus_Gone", email=email)
        run.post_event(deleted)
        detail = run.wait_final(deleted["id"])
        later = sample_event("customer.subscription.deleted", customer_id="cus_Gone")
        run.post_event(later)
        later_detail = run.wait_final(later["id"])
        assert check(cio)
        if policy == "keep":
            assert [d.status for d in detail.deliveries] == ["succeeded", "skipped"]
            assert _named(cio, "customer_deleted")
        else:
            assert [d.status for d in detail.deliveries] == ["skipped", "succeeded"]
            assert {d.status for d in later_detail.deliveries} == {"skipped"}
            assert cio.person("cus_Gone") is None


def test_connect_events_read_stripe_with_the_account(
    running: Running, stripe_api: FakeStripe
) -> None:
    """An event from a connected account looks the customer up with Stripe-Account."""
    stripe_api.add_customer("cus_Connect", email="connect@example.com")
    event = _strip_emails(sample_event("charge.succeeded", customer_id="cus_Connect"))
    event["account"] = "acct_1Connected"
    running.post_event(event)
    running.wait_final(event["id"])
    reads = stripe_api.requests_to("/v1/customers/cus_Connect")
    assert reads
    assert all(r.headers.get("stripe-account") == "acct_1Connected" for r in reads)
    wait_until(lambda: (running.cio.person("cus_Connect") or {}).get("email"), timeout=5)


def _subscription(
    event_type: str, customer_id: str, sub_id: str, created: int, **fields: Any
) -> dict[str, Any]:
    event = sample_event(event_type, customer_id=customer_id, created=created)
    event["data"]["object"].update(id=sub_id, created=created, **fields)
    return event


def test_attributes_that_stop_being_true_are_removed(running: Running) -> None:
    """A trial that gives way to a paid subscription, a second currency that goes away: the
    identify removes `trial_end`, then `mrr_by_currency` and `canceled_at` (sent as "");
    the product's own attribute on the same person is untouched."""
    customer_id, email, at = "cus_Removed", "removed@example.com", 1_700_000_000
    running.post_event(sample_event("customer.created", customer_id=customer_id, email=email))
    trial = _subscription(
        "customer.subscription.created",
        customer_id,
        "sub_Trial",
        at,
        status="trialing",
        trial_start=at,
        trial_end=at + 14 * 86_400,
    )
    running.post_event(trial)
    _settled(running, trial["id"])
    person = running.cio.person(customer_id)
    assert person is not None
    assert person["trial_end"] == at + 14 * 86_400
    assert "mrr_by_currency" not in person

    # The product identifies the same person with an attribute of its own.
    config = running.cio.config
    own = httpx.put(
        f"{running.cio.url}/api/v1/customers/{customer_id}",
        json={"favourite_colour": "green"},
        auth=(config.site_id, config.track_api_key),
        timeout=10,
    )
    assert own.status_code == 200, own.text

    # The trial is dropped for a new (paid, usd) subscription; a eur one is added.
    ended = _subscription(
        "customer.subscription.deleted", customer_id, "sub_Trial", at + 10, canceled_at=at + 10
    )
    paid = _subscription("customer.subscription.created", customer_id, "sub_Usd", at + 20)
    euro = _subscription(
        "customer.subscription.created", customer_id, "sub_Eur", at + 30, currency="eur"
    )
    euro["data"]["object"]["items"]["data"][0]["price"]["currency"] = "eur"
    for event in (ended, paid, euro):
        running.post_event(event)
    _settled(running, ended["id"], paid["id"], euro["id"])
    person = running.cio.person(customer_id)
    assert person is not None
    assert "trial_end" not in person  # the trialing subscription is no longer described
    assert person["subscription_id"] == "sub_Eur"
    assert set(person["mrr_by_currency"]) == {"eur", "usd"}

    # The eur subscription ends: one currency again, and the chosen one is not canceled.
    gone = _subscription(
        "customer.subscription.deleted",
        customer_id,
        "sub_Eur",
        at + 30,
        currency="eur",
        canceled_at=at + 40,
    )
    gone["created"] = at + 40
    running.post_event(gone)
    _settled(running, gone["id"])
    person = running.cio.person(customer_id)
    assert person is not None
    assert person["subscription_id"] == "sub_Usd"
    for removed in ("mrr_by_currency", "canceled_at", "trial_end"):
        assert removed not in person, removed
    assert person["favourite_colour"] == "green"
    assert person["email"] == email
    last = [
        r["body"]
        for r in running.cio.requests
        if r["method"] == "PUT" and r["body"].get("subscription_id") == "sub_Usd"
    ][-1]
    assert last["mrr_by_currency"] == ""
    assert last["canceled_at"] == ""
    assert "favourite_colour" not in last  # never removes what Billbridge does not own
    assert last["email"] == email
