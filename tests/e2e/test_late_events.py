"""Late events over real HTTP: each workflow's late_events policy (record, trigger, skip)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from billbridge.app import create_app
from billbridge.ids import deterministic_ulid
from billbridge.services import Services
from billbridge.store.records import FINAL_STATUSES, DeliveryView
from billbridge.stripe.samples import sample_event
from billbridge.stripe.signature import sign_payload
from tests.fakes import customerio as cio_fakes
from tests.fakes import stripe_api as stripe_fakes
from tests.fakes.customerio import FakeCustomerIO
from tests.fakes.stripe_api import FakeStripe
from tests.support.auth import AUTH
from tests.support.dashboard import ADMIN_PASSWORD, logged_in
from tests.support.live_server import serve_app, wait_until
from tests.support.stripe_jobs import SECRET, invoke, use_env

fake_stripe = stripe_fakes.fake_stripe
fake_stripe_server = stripe_fakes.fake_stripe_server
fake_customerio = cio_fakes.fake_customerio
fake_customerio_server = cio_fakes.fake_customerio_server

DAY = 86_400
EVENT_NAME = "late_check"


@dataclass
class Late:
    url: str
    services: Services
    cio: FakeCustomerIO

    def add_workflow(self, policy: str) -> None:
        """A workflow tracking `late_check` on invoice.paid with this late_events policy,
        created through the API (which returns the field)."""
        body = {
            "id": f"late-{policy}",
            "name": f"Late {policy}",
            "late_events": policy,
            "trigger": {"events": ["invoice.paid"]},
            "actions": [{"type": "track_event", "name": EVENT_NAME}],
        }
        response = httpx.post(f"{self.url}/api/workflows", json=body, headers=AUTH, timeout=10)
        assert response.status_code in (200, 201), response.text
        assert response.json()["late_events"] == policy

    def post(self, event: dict[str, Any]) -> None:
        body = json.dumps(event).encode()
        headers = {
            "Content-Type": "application/json",
            "Stripe-Signature": sign_payload(body, SECRET),
        }
        response = httpx.post(
            f"{self.url}/webhooks/stripe", content=body, headers=headers, timeout=10
        )
        assert response.status_code == 200, response.text

    def delivery(self, stripe_event_id: str, workflow_id: str, attempts: int = 1) -> DeliveryView:
        """The workflow's delivery of the event once final after `attempts` attempts."""

        def final() -> DeliveryView | None:
            detail = self.services.store.get_event(stripe_event_id)
            for delivery in detail.deliveries if detail else ():
                if delivery.workflow_id != workflow_id or delivery.status not in FINAL_STATUSES:
                    continue
                if delivery.attempt_count >= attempts:
                    return delivery
            return None

        found: DeliveryView = wait_until(final, timeout=30)
        return found

    def received(self, stripe_event_id: str) -> list[dict[str, Any]]:
        """The `late_check` events the fake Customer.io stored for this Stripe event."""
        return [
            e
            for e in self.cio.events
            if e["name"] == EVENT_NAME and e["data"].get("stripe_event_id") == stripe_event_id
        ]


@pytest.fixture
def late(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_stripe: FakeStripe,
    fake_customerio: FakeCustomerIO,
) -> Iterator[Late]:
    """The app with its worker, the fake Customer.io and Stripe; the environment (what the
    CLI reads) points at the same database."""
    settings = use_env(
        monkeypatch,
        tmp_path,
        fake_stripe,
        fake_customerio,
        BILLBRIDGE_API_TOKEN=AUTH["Authorization"].removeprefix("Bearer "),
        BILLBRIDGE_ADMIN_PASSWORD=ADMIN_PASSWORD,
        # `indirect` parametrization picks it; "auto" sends person calls as v2 batches.
        BILLBRIDGE_TRACK_BATCHING=getattr(request, "param", "off"),
    )
    app = create_app(settings, run_worker=True)
    with serve_app(app) as url:
        yield Late(url, app.state.services, fake_customerio)


def _invoice_paid(created: int) -> dict[str, Any]:
    return sample_event(
        "invoice.paid", livemode=True, created=created, customer_id="cus_Late1", email="l@x.io"
    )


def _late_counter(url: str, policy: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    prefix = f'billbridge_late_deliveries_total{{policy="{policy}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


def test_record_sends_the_original_timestamp_and_starts_no_campaign(late: Late) -> None:
    """`record` (the default): a 4-day-old event reaches Customer.io with Stripe's time; the
    fake says it cannot start campaigns; the attempt, the API, the event page and the
    metrics mark it late with policy record."""
    late.add_workflow("record")
    created = int(time.time()) - 4 * DAY
    event = _invoice_paid(created)
    late.post(event)
    delivery = late.delivery(event["id"], "late-record")
    assert delivery.status == "succeeded"
    [stored] = late.received(event["id"])
    assert stored["timestamp"] == created
    assert "stripe_created" not in stored["data"]
    assert stored["triggers_campaigns"] is False
    assert delivery.attempts[-1].request is not None
    assert delivery.attempts[-1].request["late"]["policy"] == "record"
    assert delivery.attempts[-1].request["late"]["age_seconds"] >= 4 * DAY
    api = httpx.get(f"{late.url}/api/events/{event['id']}", headers=AUTH, timeout=10).json()
    policies = {d["workflow_id"]: d["late_policy"] for d in api["deliveries"]}
    assert policies["late-record"] == "record"
    with logged_in(late.url) as client:
        page = client.get(f"/events/{event['id']}")
    assert page.status_code == 200
    assert "late · record" in page.text
    assert "late_events policy is record" in page.text
    assert _late_counter(late.url, "record") >= 1


@pytest.mark.parametrize("late", ["off", "auto"], indirect=True)
def test_trigger_sends_the_send_time_and_keeps_the_event_id(late: Late) -> None:
    """`trigger`: timestamp = send time, the original under data.stripe_created, the same
    deterministic id (as a v1 call or a v2 batch operation); the fake says it can start
    campaigns; a replay is deduplicated."""
    late.add_workflow("trigger")
    created = int(time.time()) - 5 * DAY
    event = _invoice_paid(created)
    before = int(time.time())
    late.post(event)
    delivery = late.delivery(event["id"], "late-trigger")
    assert delivery.status == "succeeded"
    [stored] = late.received(event["id"])
    assert before <= stored["timestamp"] <= int(time.time())
    assert stored["data"]["stripe_created"] == created
    assert stored["id"] == deterministic_ulid(event["id"], "late-trigger", 0, created=created)
    assert stored["triggers_campaigns"] is True
    assert _late_counter(late.url, "trigger") == 1
    first = delivery.attempts[-1].request
    assert first is not None
    if late.services.settings.track_batching == "auto":  # the event went as a v2 operation
        assert first["operation"]["attributes"]["stripe_created"] == created

    # A replay of the old event sends the same id again: Customer.io ignores it.
    duplicates = late.cio.app.workspace.duplicate_events
    replay = httpx.post(f"{late.url}/api/events/{event['id']}/replay", headers=AUTH, timeout=10)
    assert replay.status_code == 200, replay.text
    again = late.delivery(event["id"], "late-trigger", attempts=2)
    assert again.status == "succeeded"
    sent = again.attempts[-1].request
    assert sent is not None
    assert (sent.get("body") or sent["operation"])["id"] == stored["id"]
    assert again.attempts[-1].request["late"]["policy"] == "trigger"
    wait_until(lambda: late.cio.app.workspace.duplicate_events > duplicates, timeout=10)
    assert len(late.received(event["id"])) == 1
    assert _late_counter(late.url, "trigger") == 2


def test_skip_sends_nothing_and_says_late(late: Late) -> None:
    """`skip`: the late event is not sent; the delivery is skipped with a reason "late"."""
    late.add_workflow("skip")
    event = _invoice_paid(int(time.time()) - 3 * DAY - 3600)
    late.post(event)
    delivery = late.delivery(event["id"], "late-skip")
    assert delivery.status == "skipped"
    assert (delivery.last_error or "").startswith("late:")
    assert "skip" in (delivery.last_error or "")
    # The default invoice workflow (record) did send its own event: the worker ran.
    wait_until(
        lambda: any(e["data"].get("stripe_event_id") == event["id"] for e in late.cio.events)
    )
    assert late.received(event["id"]) == []
    assert _late_counter(late.url, "skip") == 1


def test_a_fresh_event_is_not_late_whatever_the_policy(late: Late) -> None:
    """An event within 72 h is sent with its own timestamp, unmarked, even under trigger."""
    late.add_workflow("trigger")
    created = int(time.time()) - 71 * 3600
    event = _invoice_paid(created)
    late.post(event)
    delivery = late.delivery(event["id"], "late-trigger")
    assert delivery.status == "succeeded"
    [stored] = late.received(event["id"])
    assert stored["timestamp"] == created
    assert stored["triggers_campaigns"] is True
    assert delivery.attempts[-1].request is not None
    assert "late" not in delivery.attempts[-1].request
    assert _late_counter(late.url, "trigger") == 0


def test_reconcile_of_an_older_event_says_it_was_late_and_applies_the_policy(
    late: Late, fake_stripe: FakeStripe
) -> None:
    """`reconcile` recovers a 6-day-old event that never arrived, says one recovered event
    was late, and the worker applies the workflow's policy (trigger) to it."""
    late.add_workflow("trigger")
    created = int(time.time()) - 6 * DAY
    old = fake_stripe.add_event(_invoice_paid(created))
    fresh = fake_stripe.add_event(_invoice_paid(int(time.time()) - 60))
    result = invoke("reconcile", "--since", "7d")
    assert result.exit_code == 0, result.output
    assert "2 recovered" in result.output
    assert "Late: 1 of the recovered events" in result.output
    delivery = late.delivery(old["id"], "late-trigger")
    assert delivery.status == "succeeded"
    [stored] = late.received(old["id"])
    assert stored["data"]["stripe_created"] == created
    assert stored["triggers_campaigns"] is True
    fresh_delivery = late.delivery(fresh["id"], "late-trigger")
    assert fresh_delivery.attempts[-1].request is not None
    assert "late" not in fresh_delivery.attempts[-1].request


def test_a_dry_run_of_a_stored_old_event_shows_the_policy(late: Late) -> None:
    """`POST /api/workflows/{id}/test` on a stored 4-day-old event plans what would be sent
    now: trigger moves the timestamp, skip says late; nothing is sent."""
    late.add_workflow("trigger")
    late.add_workflow("skip")
    created = int(time.time()) - 4 * DAY
    event = _invoice_paid(created)
    late.post(event)
    late.delivery(event["id"], "late-skip")
    sent_before = len(late.cio.requests)
    answers = {
        policy: httpx.post(
            f"{late.url}/api/workflows/late-{policy}/test",
            json={"stripe_event_id": event["id"]},
            headers=AUTH,
            timeout=10,
        ).json()["requests"][0]
        for policy in ("trigger", "skip")
    }
    planned = answers["trigger"]
    assert planned["status"] == "planned"
    assert planned["request"]["body"]["data"]["stripe_created"] == created
    assert answers["skip"]["status"] == "skipped"
    assert answers["skip"]["reason"].startswith("late:")
    assert len(late.cio.requests) == sent_before
