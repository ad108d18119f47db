"""Alerts before it is too late, through real sockets: deliveries retrying while the fake
Customer.io answers 503 or 429, failures after a 401, webhooks refused for their signature,
Stripe silent, the Stripe endpoint missing event types; each fires once, says what to do,
and is followed by a "resolved" message. Thresholds through the API and the Alerts page."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from billbridge.alerts.config import AlertConfig
from billbridge.alerts.monitor import AlertMonitor, save_alert_config
from billbridge.composition import build_services
from billbridge.secret_box import SecretBox
from billbridge.stripe.samples import sample_event
from billbridge.stripe.signature import sign_payload
from tests.fakes.customerio import FakeCustomerIO
from tests.fakes.stripe_api import FakeStripe
from tests.integration.test_alerts import Receiver
from tests.integration.test_store_conformance import actions, attempt, claim_all, event
from tests.support.auth import AUTH
from tests.support.dashboard import (
    ALERTS_QUIET,
    WEBHOOK_SECRET,
    csrf_from,
    dashboard_settings,
    logged_in,
    running_dashboard,
)
from tests.support.live_server import serve_app, wait_until

QUIET = ALERTS_QUIET  # only the condition under test: the others stay quiet


@dataclass
class Live:
    url: str
    hook: str
    got: Receiver
    cio: FakeCustomerIO

    def configure(self, **changes: Any) -> None:
        saved = httpx.put(
            self.url + "/api/alerts",
            json={"webhook_url": self.hook + "/alerts", **QUIET, **changes},
            headers=AUTH,
            timeout=10,
        )
        assert saved.status_code == 200, saved.text

    def post(self, stripe_event: dict[str, Any], secret: str = WEBHOOK_SECRET) -> int:
        body = json.dumps(stripe_event).encode()
        return httpx.post(
            self.url + "/webhooks/stripe",
            content=body,
            headers={
                "Content-Type": "application/json",
                "Stripe-Signature": sign_payload(body, secret),
            },
            timeout=10,
        ).status_code

    def message(self, kind: str, state: str | None) -> dict[str, Any]:
        """Wait for the alert of `kind` in `state`; it must come exactly once."""

        def found() -> list[dict[str, Any]]:
            return [b for b in self.got.bodies if b["kind"] == kind and b["state"] == state]

        wait_until(found)
        (body,) = found()
        return body


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    """The app with its worker and its alert loop (every 0.2 s), the fake Customer.io and a
    local alert receiver."""
    receiver = Receiver()
    with FakeCustomerIO(app_rate_limit=None) as cio, serve_app(receiver.app) as hook:
        settings = dashboard_settings(
            tmp_path,
            BILLBRIDGE_ALERTS_ALLOW_LOOPBACK="true",
            BILLBRIDGE_ALERTS_CHECK_INTERVAL="0.2",
            BILLBRIDGE_RETRY_SCHEDULE="0.3",
            **cio.settings_env(),
        )
        with running_dashboard(settings, run_worker=True) as (url, _):
            yield Live(url, hook, receiver, cio)


@pytest.mark.parametrize(
    ("status", "words"),
    [(503, "Customer.io is down or unreachable"), (429, "a rate-limit storm")],
)
def test_retrying_deliveries_fire_with_the_cause_then_resolve(
    live: Live, status: int, words: str
) -> None:
    """While Customer.io answers 503 (or 429), more retrying deliveries than the threshold
    fire one "retrying" alert naming the cause and what to do; once it answers again the
    deliveries go through and one "resolved" message follows."""
    live.configure(on_retrying=True, retrying_count=1, retrying_minutes=600)
    live.cio.fail_next(status, count=None, retry_after=1 if status == 429 else None)
    charge = sample_event("charge.failed", customer_id="cus_Retry", email="retry@example.com")
    assert live.post(charge) == 200
    firing = live.message("retrying", "firing")
    assert words in firing["text"]
    assert firing["actions"], firing
    assert "What to do:" in firing["text"]
    live.cio.clear_faults()
    resolved = live.message("retrying", "resolved")
    assert resolved["title"].startswith("Resolved:")
    assert len([b for b in live.got.bodies if b["kind"] == "retrying"]) == 2


def test_a_revoked_key_is_named_in_the_failures_alert(live: Live) -> None:
    """Customer.io answering 401 fails deliveries at once; the failures alert says the key
    was revoked or changed and where to enter the current one."""
    live.configure(on_failures=True)
    live.cio.fail_next(401, count=None)
    charge = sample_event("charge.failed", customer_id="cus_Key", email="key@example.com")
    assert live.post(charge) == 200
    message = live.message("failures", None)
    assert "401/403" in message["text"]
    assert "revoked or changed" in message["text"]
    assert any("Connections" in step for step in message["actions"])


def test_refused_signatures_fire_and_resolve(live: Live) -> None:
    """Webhooks signed with another secret (a rotated one) are counted in the database; at
    the threshold one alert tells how to put the new secret in; raising the threshold
    above the count clears it with a "resolved" message."""
    live.configure(on_signatures=True, signature_failures=3, signature_window_minutes=15)
    for n in range(3):
        assert live.post(sample_event("charge.failed"), secret=f"whsec_rotated_{n}") == 400
    firing = live.message("signatures", "firing")
    assert (
        firing["title"] == "Billbridge: 3 webhooks refused for their signature in the last 15 min"
    )
    assert "STRIPE_WEBHOOK_SECRET" in firing["text"]
    assert "whsec_rotated" not in json.dumps(live.got.bodies)
    live.configure(on_signatures=True, signature_failures=50)
    live.message("signatures", "resolved")


def test_stripe_silence_fires_and_resolves_on_the_next_webhook(live: Live) -> None:
    """No webhook for longer than the threshold fires "stripe_silent"; the next webhook
    resolves it."""
    live.configure(on_stripe_silence=True, stripe_silence_hours=0.0003)  # ~1 s
    assert live.post(sample_event("charge.failed", customer_id="cus_Q")) == 200
    firing = live.message("stripe_silent", "firing")
    assert "reconcile" in firing["text"]
    assert live.post(sample_event("charge.failed", customer_id="cus_Q")) == 200
    live.message("stripe_silent", "resolved")


def test_endpoint_missing_event_types_fires_once_and_resolves(tmp_path: Path) -> None:
    """The Stripe endpoint at BILLBRIDGE_PUBLIC_URL/webhooks/stripe (listed through the fake
    Stripe API) lacking types enabled workflows need fires one alert across two monitors
    (two processes); subscribing it to every event resolves it."""
    receiver = Receiver()
    with FakeStripe() as stripe, serve_app(receiver.app) as hook:
        endpoint = {
            "id": "we_test_1",
            "object": "webhook_endpoint",
            "url": "https://billing.example.com/webhooks/stripe",
            "enabled_events": ["invoice.paid"],
            "status": "enabled",
            "api_version": None,
            "livemode": False,
            "metadata": {},
            "secret": "whsec_x",
        }
        stripe.webhook_endpoints["we_test_1"] = endpoint
        settings = dashboard_settings(
            tmp_path,
            BILLBRIDGE_ALERTS_ALLOW_LOOPBACK="true",
            BILLBRIDGE_PUBLIC_URL="https://billing.example.com",
            STRIPE_API_KEY=stripe.api_key,
            STRIPE_API_BASE=stripe.base_url,
        )
        first, second = build_services(settings), build_services(settings)
        try:
            config = AlertConfig(webhook_url=hook + "/alerts", **{**QUIET, "on_endpoint": True})
            save_alert_config(first, SecretBox.from_settings(settings), config)

            async def checks() -> list[Any]:
                one = AlertMonitor(first, endpoint_check_seconds=0)
                two = AlertMonitor(second, endpoint_check_seconds=0)
                found = [await one.check_once(), await two.check_once()]
                endpoint["enabled_events"] = ["*"]
                found += [await two.check_once(), await one.check_once()]
                return found

            sent = asyncio.run(checks())
        finally:
            for services in (first, second):
                asyncio.run(services.aclose())
    assert [results is not None for results in sent] == [True, False, True, False]
    firing, resolved = receiver.bodies
    assert (firing["kind"], firing["state"]) == ("endpoint", "firing")
    assert "customer.subscription.deleted" in firing["text"]  # a default workflow's trigger
    assert "invoice.paid," not in firing["text"]
    assert "billbridge setup-webhook --sync" in firing["text"]
    assert "Sync the Stripe endpoint" in firing["text"]
    assert (resolved["kind"], resolved["state"]) == ("endpoint", "resolved")
    assert stripe.requests_to("/v1/webhook_endpoints")


def test_thresholds_are_validated_in_the_api_and_saved_from_the_page(tmp_path: Path) -> None:
    """PUT /api/alerts refuses thresholds out of range (422 naming the field) and returns
    the defaults; the Alerts page saves thresholds and shows a bad one next to its field."""
    settings = dashboard_settings(tmp_path)
    with running_dashboard(settings) as (url, _):
        shown = httpx.get(url + "/api/alerts", headers=AUTH, timeout=10).json()
        assert (shown["retrying_minutes"], shown["retrying_count"]) == (60.0, 100)
        assert (shown["signature_failures"], shown["stripe_silence_hours"]) == (10, 24.0)
        assert (shown["on_no_worker"], shown["no_worker_seconds"]) == (True, 60.0)
        for bad in (
            {"retrying_count": 0},
            {"signature_window_minutes": "soon"},
            {"no_worker_seconds": -1},
        ):
            refused = httpx.put(url + "/api/alerts", json=bad, headers=AUTH, timeout=10)
            assert refused.status_code == 422
            assert set(refused.json()["errors"]) == set(bad)
        saved = httpx.put(
            url + "/api/alerts", json={"stripe_silence_hours": 6}, headers=AUTH, timeout=10
        )
        assert saved.json()["stripe_silence_hours"] == 6.0

        with logged_in(url) as client:
            page = client.get("/settings/alerts")
            assert 'name="retrying_count"' in page.text
            assert 'name="no_worker_seconds"' in page.text
            form = {
                "csrf_token": csrf_from(page.text),
                "on_retrying": "1",
                "retrying_minutes": "30",
                "retrying_count": "250",
                "signature_failures": "5",
            }
            assert client.post("/settings/alerts", data=form).status_code == 200
            after = httpx.get(url + "/api/alerts", headers=AUTH, timeout=10).json()
            assert (after["retrying_minutes"], after["retrying_count"]) == (30.0, 250)
            assert (after["on_retrying"], after["on_signatures"]) == (True, False)
            assert after["stripe_silence_hours"] == 6.0  # not in the form: kept
            bad = client.post("/settings/alerts", data={**form, "retrying_count": "2.5"})
            assert bad.status_code == 422
            assert 'id="retrying_count-error"' in bad.text


def test_a_stalled_queue_fires_once_and_resolves_when_it_moves(tmp_path: Path) -> None:
    """A due delivery waiting past the stall threshold fires one "stall" alert telling to
    check the workers; once it is delivered, one "resolved" message follows."""
    receiver = Receiver()
    with serve_app(receiver.app) as hook:
        settings = dashboard_settings(tmp_path, BILLBRIDGE_ALERTS_ALLOW_LOOPBACK="true")
        services = build_services(settings)
        try:
            config = AlertConfig(
                webhook_url=hook + "/alerts", **{**QUIET, "on_stall": True, "stall_minutes": 0.001}
            )
            save_alert_config(services, SecretBox.from_settings(settings), config)
            services.store.ingest(event("stall"), actions(1, "welcome"))  # no worker runs
            wait_until(lambda: services.store.stats().oldest_pending_age >= 0.06)
            monitor = AlertMonitor(services)

            async def check() -> Any:
                return await monitor.check_once()

            assert asyncio.run(check()) is not None
            assert asyncio.run(check()) is None  # still stalled: no second message
            for claim in claim_all(services.store).values():
                services.store.complete(claim.delivery_id, claim.claim_id, "succeeded", attempt())
            assert asyncio.run(check()) is not None
        finally:
            asyncio.run(services.aclose())
    firing, resolved = receiver.bodies
    assert (firing["kind"], firing["state"]) == ("stall", "firing")
    assert any("worker" in step for step in firing["actions"])
    assert (resolved["state"], resolved["title"]) == (
        "resolved",
        "Resolved: the queue is moving again",
    )
