"""Webhook to Customer.io over real HTTP: every default trigger, outages, errors, replays."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from billbridge.app import create_app
from billbridge.billing.context import billing_context
from billbridge.config import Settings
from billbridge.customerio.requests import CioRequest
from billbridge.customerio.v2 import to_batch_operation
from billbridge.identity import Person
from billbridge.services import Services
from billbridge.store.records import FINAL_STATUSES, EventDetail
from billbridge.stripe.samples import sample_event
from billbridge.stripe.signature import sign_payload
from billbridge.workflows.defaults import default_workflows, semantic_workflows
from billbridge.workflows.planner import Skip, plan_action
from tests.fakes.customerio import FakeCustomerIO
from tests.fakes.stripe_api import FakeStripe
from tests.support.auth import API_TOKEN_ENV, AUTH
from tests.support.live_server import serve_app, wait_until

SECRET = "whsec_flow_test"
DEFAULT_TRIGGERS = sorted({t for w in default_workflows() for t in w.trigger.events})
SEMANTIC_IDS = frozenset(w.id for w in semantic_workflows())


@dataclass
class Running:
    url: str
    services: Services
    cio: FakeCustomerIO
    stripe: FakeStripe | None = None

    def post_event(self, event: dict[str, Any]) -> httpx.Response:
        body = json.dumps(event).encode()
        response = httpx.post(
            self.url + "/webhooks/stripe",
            content=body,
            headers={
                "Content-Type": "application/json",
                "Stripe-Signature": sign_payload(body, SECRET),
            },
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return response

    def event(self, stripe_event_id: str) -> EventDetail:
        detail = self.services.store.get_event(stripe_event_id)
        assert detail is not None
        return detail

    def wait_final(self, stripe_event_id: str, timeout: float = 20) -> EventDetail:
        def final() -> EventDetail | None:
            detail = self.event(stripe_event_id)
            done = all(d.status in FINAL_STATUSES for d in detail.deliveries)
            return detail if done else None

        result: EventDetail = wait_until(final, timeout=timeout)
        return result


@pytest.fixture
def cio() -> Iterator[FakeCustomerIO]:
    with FakeCustomerIO(app_rate_limit=None) as fake:
        yield fake


@pytest.fixture
def stripe_api() -> Iterator[FakeStripe]:
    with FakeStripe() as fake:
        yield fake


def _settings(tmp_path: Path, cio: FakeCustomerIO, **extra: str) -> Settings:
    values = {
        "DATABASE_URL": f"sqlite:///{tmp_path}/flow.db",
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "BILLBRIDGE_RETRY_SCHEDULE": "0.2",
        "CUSTOMERIO_TIMEOUT": "2",
        "BILLBRIDGE_VAR_DIR": str(tmp_path / "var"),
        # One v1 call per delivery unless a test asks for batching: the exact requests
        # are easiest to read that way.
        "BILLBRIDGE_TRACK_BATCHING": "off",
        **API_TOKEN_ENV,
        **cio.settings_env(),
        **extra,
    }
    return Settings(**values)


@pytest.fixture
def running(
    request: pytest.FixtureRequest, tmp_path: Path, cio: FakeCustomerIO, stripe_api: FakeStripe
) -> Iterator[Running]:
    """The app with its worker; `indirect` parametrization picks BILLBRIDGE_TRACK_BATCHING."""
    settings = _settings(
        tmp_path,
        cio,
        STRIPE_API_KEY=stripe_api.api_key,
        STRIPE_API_BASE=stripe_api.base_url,
        BILLBRIDGE_TRACK_BATCHING=getattr(request, "param", "off"),
    )
    app = create_app(settings, run_worker=True)
    with serve_app(app) as url:
        yield Running(url, app.state.services, cio, stripe_api)


def _expected(running: Running, event: dict[str, Any], detail: EventDetail) -> list[CioRequest]:
    """What each delivery that was sent must have sent (skipped ones plan a Skip), with the
    billing profile and changes as they are now (nothing newer arrived since)."""
    services = running.services
    person = services.resolver.resolve(event)
    assert isinstance(person, Person)
    planned = []
    for delivery in detail.deliveries:
        workflow = services.catalog.get(delivery.workflow_id)
        assert workflow is not None
        extra = billing_context(services.store, workflow, delivery.action_index, event, person)
        request = plan_action(
            workflow,
            delivery.action_index,
            event,
            person,
            profile=extra.profile,
            profile_removals=extra.profile_removals,
            changes=extra.changes,
        )
        if delivery.status == "skipped":
            assert isinstance(request, Skip), request
            continue
        assert isinstance(request, CioRequest)
        planned.append(request)
    return planned


def _received(cio: FakeCustomerIO, request: CioRequest, after: int = 0) -> list[dict[str, Any]]:
    """Each time Customer.io accepted `request`: as itself, or as its operation in a batch."""
    operation = to_batch_operation(request)
    found: list[dict[str, Any]] = []
    for r in cio.requests:
        if r["seq"] <= after or r["status"] != 200:
            continue
        if (r["method"], r["path"], r["body"]) == (request.method, request.path, request.body):
            found.append(r)
        elif r["path"] == "/api/v2/batch" and operation is not None:
            found.extend(r for op in r["body"]["batch"] if op == operation)
    return found


@pytest.mark.parametrize("running", ["off", "auto"], indirect=True)
@pytest.mark.parametrize("event_type", DEFAULT_TRIGGERS)
def test_every_default_trigger_reaches_customerio_exactly_as_planned(
    running: Running, event_type: str
) -> None:
    """Each default trigger's sample becomes exactly the planned Customer.io calls, once each
    (one v1 call per delivery, or the same calls as Track v2 batch operations), with the
    email found even when the event does not carry it (local customers table)."""
    customer_id, email = "cus_FlowTest0001", "flow.tester@example.com"
    known = sample_event("customer.created", customer_id=customer_id, email=email)
    running.post_event(known)
    running.wait_final(known["id"])
    after = max((r["seq"] for r in running.cio.requests), default=0)

    event = sample_event(event_type, customer_id=customer_id, email=email)
    charge_id = event["data"]["object"].get("charge")
    if event_type == "charge.dispute.created" and running.stripe is not None:
        # A dispute names only its charge: the resolver reads the charge from Stripe.
        running.stripe.add_charge(charge_id, customer=customer_id, email=email)
    running.post_event(event)
    detail = running.wait_final(event["id"])
    assert detail.deliveries, f"no default workflow matched {event_type}"
    # Semantic-event workflows and the customer.deleted policy (keep) skip when they have
    # nothing to do; everything else is sent.
    for delivery in detail.deliveries:
        optional = delivery.workflow_id in SEMANTIC_IDS or delivery.action_type == (
            "customer_deleted_policy"
        )
        allowed = {"succeeded", "skipped"} if optional else {"succeeded"}
        assert delivery.status in allowed, delivery
    for request in _expected(running, event, detail):
        assert len(_received(running.cio, request, after)) == 1, request.summary()
        if request.body and "email" in request.body:
            assert request.body["email"] == email
    assert running.cio.violations == []


def test_duplicate_webhook_gives_one_customerio_event(running: Running) -> None:
    """The same Stripe event delivered twice produces one Customer.io event."""
    event = sample_event("charge.failed", customer_id="cus_Dup1", email="dup@example.com")
    running.post_event(event)
    running.post_event(event)
    running.wait_final(event["id"])
    names = [e for e in running.cio.events if e["data"].get("stripe_event_id") == event["id"]]
    assert len(names) == 1
    assert names[0]["name"] == "payment_failed"


@pytest.mark.parametrize("running", ["off", "auto"], indirect=True)
def test_outage_then_recovery_loses_nothing(running: Running) -> None:
    """While Customer.io answers 503 deliveries retry; after it recovers all arrive once."""
    running.cio.set_outage(True)
    events = [
        sample_event("invoice.paid", customer_id=f"cus_Out{i}", email=f"out{i}@example.com")
        for i in range(5)
    ]
    for event in events:
        running.post_event(event)
    wait_until(
        lambda: all(
            d.status == "retrying" and d.attempt_count >= 2
            for e in events
            for d in running.event(e["id"]).deliveries
            if d.workflow_id not in SEMANTIC_IDS
        ),
        timeout=20,
    )
    running.cio.set_outage(False)
    for event in events:
        detail = running.wait_final(event["id"])
        # payment-recovered skips: these invoices never failed.
        assert {d.status for d in detail.deliveries if d.workflow_id not in SEMANTIC_IDS} == {
            "succeeded"
        }
        attempts = detail.deliveries[0].attempts
        assert [a.response_status for a in attempts][:2] == [503, 503]
        assert attempts[-1].outcome == "succeeded"
    ids = [e["data"]["stripe_event_id"] for e in running.cio.events]
    assert sorted(ids) == sorted(e["id"] for e in events)


def test_retry_after_is_honoured(running: Running) -> None:
    """A 429 with Retry-After: 1 is retried no sooner than one second later."""
    running.cio.fail_next(429, retry_after=1, path_prefix="/api/v1/customers/cus_Slow/events")
    event = sample_event("charge.succeeded", customer_id="cus_Slow", email="slow@example.com")
    running.post_event(event)
    detail = running.wait_final(event["id"])
    attempts = detail.deliveries[0].attempts
    assert [a.response_status for a in attempts] == [429, 200]
    assert attempts[1].started_at - attempts[0].started_at >= 1.0


def test_terminal_error_fails_at_once_and_replay_fixes_it(running: Running) -> None:
    """A 400 fails without retrying, keeps the reason; a replay through the API succeeds."""
    running.cio.fail_next(
        400,
        path_prefix="/api/v1/customers/cus_Bad/events",
        body={"meta": {"errors": ["name is required"]}},
    )
    event = sample_event("charge.refunded", customer_id="cus_Bad", email="bad@example.com")
    running.post_event(event)
    detail = running.wait_final(event["id"])
    delivery = detail.deliveries[0]
    assert delivery.status == "failed"
    assert len(delivery.attempts) == 1
    assert "name is required" in (delivery.last_error or "")
    response = httpx.post(
        f"{running.url}/api/events/{event['id']}/replay", headers=AUTH, timeout=10
    )
    assert response.status_code == 200, response.text
    detail = running.wait_final(event["id"])
    assert detail.deliveries[0].status == "succeeded"
    assert len(detail.deliveries[0].attempts) == 2


def test_unresolvable_person_is_skipped_with_the_reason(running: Running) -> None:
    """A charge with no customer and no email is skipped, never retried."""
    event = sample_event("charge.succeeded")
    obj = event["data"]["object"]
    obj["customer"] = None
    obj["billing_details"]["email"] = None
    obj["receipt_email"] = None
    running.post_event(event)
    detail = running.wait_final(event["id"])
    assert detail.deliveries[0].status == "skipped"
    assert "no Stripe customer" in (detail.deliveries[0].last_error or "")
    assert running.cio.requests == []


def test_dry_run_without_credentials_records_the_request(tmp_path: Path) -> None:
    """Without Customer.io credentials a delivery is dry_run and keeps the exact request."""
    settings = Settings(
        DATABASE_URL=f"sqlite:///{tmp_path}/dry.db",
        STRIPE_WEBHOOK_SECRET=SECRET,
        CUSTOMERIO_SITE_ID="",
        CUSTOMERIO_TRACK_API_KEY="",
        BILLBRIDGE_VAR_DIR=str(tmp_path / "var"),
        **API_TOKEN_ENV,
    )
    assert settings.dry_run
    app = create_app(settings, run_worker=True)
    with serve_app(app) as url:
        dry = Running(url, app.state.services, cio=None)  # type: ignore[arg-type]
        event = sample_event(
            "payment_intent.canceled", customer_id="cus_Dry", email="d@example.com"
        )
        dry.post_event(event)
        detail = dry.wait_final(event["id"])
        delivery = detail.deliveries[0]
        assert delivery.status == "dry_run"
        request = delivery.attempts[-1].request
        assert request is not None
        assert request["path"] == "/api/v1/customers/cus_Dry/events"
        assert request["body"]["name"] == "payment_intent_canceled"


def test_test_mode_events_can_be_ignored(tmp_path: Path, cio: FakeCustomerIO) -> None:
    """BILLBRIDGE_TEST_MODE_EVENTS=ignore stores test events without deliveries."""
    app = create_app(_settings(tmp_path, cio, BILLBRIDGE_TEST_MODE_EVENTS="ignore"))
    with serve_app(app) as url:
        run = Running(url, app.state.services, cio)
        event = sample_event("charge.succeeded", livemode=False, customer_id="cus_T")
        assert run.post_event(event).json()["deliveries"] == 0
        live = sample_event("charge.succeeded", livemode=True, customer_id="cus_L", email="l@x.io")
        assert run.post_event(live).json()["deliveries"] == 2  # the event, then the profile
        assert run.event(event["id"]).summary.status == "ignored"


SEND_WORKFLOW = {
    "id": "receipt-email",
    "name": "Receipt email",
    "trigger": {"events": ["invoice.paid"]},
    "actions": [
        {
            "type": "send_email",
            "transactional_message_id": 7,
            "message_data": {"amount_paid": "{{ object.amount_paid }}"},
        }
    ],
}


def test_send_timeout_is_not_retried_blindly_and_sent_email_needs_force(
    tmp_path: Path, cio: FakeCustomerIO
) -> None:
    """A transactional send that times out is failed as 'unknown' (never resent on its own,
    nor by a plain replay); once a send succeeded, a replay resends it only with force."""
    settings = _settings(tmp_path, cio, CUSTOMERIO_TIMEOUT="0.5")
    app = create_app(settings)
    with serve_app(app) as url:
        run = Running(url, app.state.services, cio)
        created = httpx.post(url + "/api/workflows", json=SEND_WORKFLOW, headers=AUTH, timeout=10)
        assert created.status_code == 201, created.text
        cio.delay_next(1.5, path_prefix="/v1/send/email")
        event = sample_event("invoice.paid", customer_id="cus_Send", email="send@example.com")
        run.post_event(event)
        detail = run.wait_final(event["id"])
        send = next(d for d in detail.deliveries if d.workflow_id == "receipt-email")
        assert send.status == "failed"
        assert [a.outcome for a in send.attempts] == ["unknown"]
        assert "replay with force" in (send.last_error or "")
        wait_until(lambda: len(cio.sends) == 1)  # the slow send did happen, once

        replay = httpx.post(f"{url}/api/events/{event['id']}/replay", headers=AUTH, timeout=10)
        assert replay.status_code == 200
        held = replay.json()["held_back"]
        assert [(h["delivery_id"], h["reason"]) for h in held] == [(send.delivery_id, "unknown")]
        run.wait_final(event["id"])
        assert len(cio.sends) == 1  # may have been sent: not without force

        forced = httpx.post(
            f"{url}/api/events/{event['id']}/replay?force=true", headers=AUTH, timeout=10
        )
        assert send.delivery_id in forced.json()["replayed"]
        wait_until(lambda: len(cio.sends) == 2)  # the user chose to send again
        run.wait_final(event["id"])

        again = httpx.post(
            f"{url}/api/events/{event['id']}/replay", headers=AUTH, timeout=10
        ).json()
        assert send.delivery_id in again["skipped_sent"]
        run.wait_final(event["id"])
        assert len(cio.sends) == 2  # sent once already: not without force


def test_test_mode_events_can_be_dry_run(tmp_path: Path, cio: FakeCustomerIO) -> None:
    """BILLBRIDGE_TEST_MODE_EVENTS=dry_run computes test events but sends only live ones."""
    app = create_app(_settings(tmp_path, cio, BILLBRIDGE_TEST_MODE_EVENTS="dry_run"))
    with serve_app(app) as url:
        run = Running(url, app.state.services, cio)
        test_event = sample_event(
            "charge.failed", livemode=False, customer_id="cus_T", email="t@x.io"
        )
        live_event = sample_event(
            "charge.failed", livemode=True, customer_id="cus_L", email="l@x.io"
        )
        run.post_event(test_event)
        run.post_event(live_event)
        assert run.wait_final(test_event["id"]).deliveries[0].status == "dry_run"
        assert run.wait_final(live_event["id"]).deliveries[0].status == "succeeded"
        sent = [e["data"]["stripe_event_id"] for e in cio.events]
        assert sent == [live_event["id"]]


def test_health_readiness_and_metrics(running: Running) -> None:
    """/healthz, /readyz and /metrics answer; metrics count deliveries and ingest latency."""
    event = sample_event("charge.succeeded", customer_id="cus_M", email="m@example.com")
    running.post_event(event)
    running.wait_final(event["id"])
    assert httpx.get(running.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(running.url + "/readyz").status_code == 200
    metrics = httpx.get(running.url + "/metrics")
    assert metrics.status_code == 200
    text = metrics.text
    assert "billbridge_queue_depth 0.0" in text
    assert "billbridge_oldest_pending_age_seconds 0.0" in text
    # payment_succeeded, then the billing-profile identify
    assert 'billbridge_deliveries{status="succeeded"} 2.0' in text
    assert 'billbridge_attempts{outcome="succeeded"} 2.0' in text
    assert 'billbridge_ingest_duration_seconds_count{status="200"} 1.0' in text
    assert "whsec_" not in text
