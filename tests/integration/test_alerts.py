"""Alerts: URL checks, grouped Slack messages, the generic webhook, the Customer.io email,
a stalled queue, and the test button."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from billbridge.alerts.config import AlertConfig, AlertEmail, AlertURLError, check_alert_url
from billbridge.alerts.monitor import AlertMonitor, save_alert_config
from billbridge.composition import build_services
from billbridge.secret_box import SecretBox
from tests.fakes.customerio import FakeCustomerIO
from tests.integration.test_store_conformance import actions, attempt, claim_all, event
from tests.support.auth import AUTH
from tests.support.dashboard import csrf_from, dashboard_settings, logged_in, running_dashboard
from tests.support.live_server import serve_app, wait_until


class Receiver:
    """An HTTP server on loopback that records every JSON body posted to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

        async def record(request: Request) -> PlainTextResponse:
            self.bodies.append(await request.json())
            return PlainTextResponse("ok")

        self.app = Starlette(routes=[Route("/{path:path}", record, methods=["POST"])])


@pytest.fixture
def receiver() -> Iterator[tuple[str, Receiver]]:
    found = Receiver()
    with serve_app(found.app) as url:
        yield url, found


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/hook",
        "http://localhost:9/hook",
        "http://127.0.0.1:9/hook",
        "http://metadata.google.internal/computeMetadata/v1/",
        "file:///etc/passwd",
        "ftp://example.com/hook",
    ],
)
def test_alert_urls_to_internal_targets_are_refused(url: str) -> None:
    """Link-local, metadata, loopback and non-http URLs are refused by default."""
    with pytest.raises(AlertURLError):
        check_alert_url(url, allow_loopback=False)


def test_loopback_setting_allows_a_local_receiver_but_not_billbridge_itself() -> None:
    """BILLBRIDGE_ALERTS_ALLOW_LOOPBACK admits 127.0.0.1, never the service's own port,
    never link-local."""
    own = [("127.0.0.1", 8000)]
    check_alert_url("http://127.0.0.1:9001/hook", allow_loopback=True, own=own)
    for url in ("http://127.0.0.1:8000/api/x", "http://localhost:8000/", "http://169.254.169.254/"):
        with pytest.raises(AlertURLError):
            check_alert_url(url, allow_loopback=True, own=own)


def test_api_refuses_a_metadata_url_and_the_service_itself(tmp_path: Path) -> None:
    """PUT /api/alerts answers 422 for 169.254.169.254 and for Billbridge's own URL."""
    settings = dashboard_settings(tmp_path, BILLBRIDGE_ALERTS_ALLOW_LOOPBACK="true")
    with running_dashboard(settings) as (url, _):
        for target in ("http://169.254.169.254/latest", url + "/webhooks/stripe"):
            refused = httpx.put(
                url + "/api/alerts", json={"webhook_url": target}, headers=AUTH, timeout=10
            )
            assert refused.status_code == 422, refused.text
            assert "webhook_url" in refused.json()["errors"]


def _fail_deliveries(services: Any, first: int, count: int) -> None:
    store = services.store
    for n in range(first, first + count):
        store.ingest(event(f"alert{n}"), actions(1, "welcome"))
    for claim in claim_all(store).values():
        store.complete(
            claim.delivery_id, claim.claim_id, "failed", attempt("terminal_error", 400), error="400"
        )


def test_failures_are_grouped_into_one_slack_message(
    tmp_path: Path, receiver: tuple[str, Receiver]
) -> None:
    """Three failures make one Slack-shaped message; more within the window make none."""
    hook_url, got = receiver
    settings = dashboard_settings(tmp_path, BILLBRIDGE_ALERTS_ALLOW_LOOPBACK="true")
    services = build_services(settings)
    try:
        box = SecretBox.from_settings(settings)
        config = AlertConfig(slack_url=hook_url + "/slack", group_minutes=10)
        save_alert_config(services, box, config)
        _fail_deliveries(services, 1, 3)
        monitor = AlertMonitor(services)
        results = asyncio.run(monitor.check_once())
        assert results is not None
        assert [r.ok for r in results] == [True]
        assert asyncio.run(monitor.check_once()) is None
        _fail_deliveries(services, 4, 2)
        assert asyncio.run(monitor.check_once()) is None  # within the window: grouped
        assert len(got.bodies) == 1
        message = got.bodies[0]
        assert "3 deliveries failed permanently" in message["text"]
        assert message["blocks"][0]["type"] == "section"
        assert "welcome: 3 failed" in message["text"]
    finally:
        asyncio.run(services.aclose())


def test_generic_webhook_and_the_test_button(
    tmp_path: Path, receiver: tuple[str, Receiver]
) -> None:
    """The test endpoint posts JSON to the saved webhook; the API shows the URL masked."""
    hook_url, got = receiver
    settings = dashboard_settings(tmp_path, BILLBRIDGE_ALERTS_ALLOW_LOOPBACK="true")
    with running_dashboard(settings) as (url, _):
        secret_path = "/hooks/T000/B000/secretpart"
        saved = httpx.put(
            url + "/api/alerts",
            json={"webhook_url": hook_url + secret_path, "group_minutes": 5},
            headers=AUTH,
            timeout=10,
        )
        assert saved.status_code == 200, saved.text
        assert "secretpart" not in saved.text
        assert saved.json()["webhook_url_set"] is True
        tested = httpx.post(url + "/api/alerts/test", headers=AUTH, timeout=20)
        assert tested.json()["ok"] is True, tested.text
        assert got.bodies[0]["source"] == "billbridge"
        assert got.bodies[0]["kind"] == "test"
        shown = httpx.get(url + "/api/alerts", headers=AUTH, timeout=10).text
        assert "secretpart" not in shown


def test_alerts_page_saves_through_the_form(tmp_path: Path, receiver: tuple[str, Receiver]) -> None:
    """The Alerts page saves a Slack URL (shown masked after) and its test button sends."""
    hook_url, got = receiver
    settings = dashboard_settings(tmp_path, BILLBRIDGE_ALERTS_ALLOW_LOOPBACK="true")
    with running_dashboard(settings) as (url, _), logged_in(url) as client:
        page = client.get("/settings/alerts")
        assert page.status_code == 200
        form = {
            "csrf_token": csrf_from(page.text),
            "slack_url": hook_url + "/services/T/B/topsecret",
            "on_failures": "1",
            "stall_minutes": "15",
            "group_minutes": "10",
        }
        saved = client.post("/settings/alerts", data=form)
        assert saved.status_code == 200, saved.text
        assert "topsecret" not in saved.text
        bad = client.post(
            "/settings/alerts", data={**form, "slack_url": "http://169.254.169.254/x"}
        )
        assert bad.status_code == 422
        assert "link-local" in bad.text or "metadata" in bad.text
        tested = client.post("/settings/alerts/test", data={"csrf_token": form["csrf_token"]})
        assert "Test alert sent." in tested.text
        assert got.bodies[-1]["text"].startswith("Billbridge test alert")


def test_a_stalled_queue_is_alerted_by_email_through_customerio(tmp_path: Path) -> None:
    """A due delivery waiting longer than the stall threshold sends one email through a
    Customer.io transactional message, with the alert's fields as its message data."""
    with FakeCustomerIO() as cio:
        settings = dashboard_settings(tmp_path, **cio.settings_env())
        services = build_services(settings)
        try:
            box = SecretBox.from_settings(settings)
            config = AlertConfig(
                email=AlertEmail(transactional_message_id="7", to="ops@example.com"),
                on_failures=False,
                stall_minutes=0.001,  # 60 ms
                group_minutes=10,
            )
            save_alert_config(services, box, config)
            services.store.ingest(event("stalled"), actions(1, "welcome"))  # no worker runs
            wait_until(lambda: services.store.stats().oldest_pending_age >= 0.06)

            async def check_twice() -> tuple[Any, Any]:
                # One event loop: the Customer.io client belongs to the loop it first ran in.
                monitor = AlertMonitor(services)
                first = await monitor.check_once()
                again = await monitor.check_once()
                await services.aclose()
                return first, again

            results, again = asyncio.run(check_twice())
            assert results is not None
            assert [r.ok for r in results] == [True]
            (send,) = cio.sends
            assert send["body"]["to"] == "ops@example.com"
            assert send["body"]["transactional_message_id"] in ("7", 7)
            assert send["body"]["message_data"]["kind"] == "stall"
            assert send["body"]["message_data"]["queue_depth"] == 1
            assert again is None  # grouped: one message per window
        finally:
            services.store.close()
