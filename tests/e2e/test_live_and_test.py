"""Test and live apart: two fake Customer.io workspaces over real HTTP, one per Stripe mode."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from billbridge.app import create_app
from billbridge.config import Settings
from billbridge.services import Services
from billbridge.store.records import FINAL_STATUSES, EventDetail
from billbridge.stripe.samples import sample_event
from billbridge.stripe.signature import sign_payload
from tests.fakes import stripe_api as stripe_fakes
from tests.fakes.customerio import FakeCustomerIO
from tests.fakes.stripe_api import FakeStripe
from tests.fakes.stripe_world import generate_world, load_world
from tests.support.auth import API_TOKEN_ENV, AUTH
from tests.support.dashboard import ADMIN_PASSWORD, csrf_from, logged_in
from tests.support.live_server import serve_app, wait_until
from tests.support.stripe_jobs import invoke, use_env

fake_stripe = stripe_fakes.fake_stripe
fake_stripe_server = stripe_fakes.fake_stripe_server

SECRET = "whsec_live_and_test"
TEST_CREDENTIALS = {
    "site_id": "test-site-id",
    "track_api_key": "test-track-key-0123456789",
    "app_api_key": "test-app-key-0123456789",
}


@pytest.fixture
def live_cio() -> Iterator[FakeCustomerIO]:
    with FakeCustomerIO(app_rate_limit=None) as fake:
        yield fake


@pytest.fixture
def test_cio() -> Iterator[FakeCustomerIO]:
    """The test-mode workspace: its own credentials, so live ones would get 401 there."""
    with FakeCustomerIO(app_rate_limit=None, environment_id=202, **TEST_CREDENTIALS) as fake:
        yield fake


def _settings(tmp_path: Path, *envs: dict[str, str], **extra: str) -> Settings:
    values = {
        "DATABASE_URL": f"sqlite:///{tmp_path}/modes.db",
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "BILLBRIDGE_RETRY_SCHEDULE": "0.2",
        "BILLBRIDGE_VAR_DIR": str(tmp_path / "var"),
        "BILLBRIDGE_TRACK_BATCHING": "auto",
        **API_TOKEN_ENV,
    }
    for env in envs:
        values.update(env)
    values.update(extra)
    return Settings(**values)


def _post(url: str, event: dict[str, Any]) -> None:
    body = json.dumps(event).encode()
    headers = {"Content-Type": "application/json", "Stripe-Signature": sign_payload(body, SECRET)}
    response = httpx.post(f"{url}/webhooks/stripe", content=body, headers=headers, timeout=10)
    assert response.status_code == 200, response.text


def _final(services: Services, stripe_event_id: str) -> EventDetail:
    def done() -> EventDetail | None:
        detail = services.store.get_event(stripe_event_id)
        if detail is None or not detail.deliveries:
            return None
        return detail if all(d.status in FINAL_STATUSES for d in detail.deliveries) else None

    found: EventDetail = wait_until(done, timeout=30)
    return found


def _event_ids(fake: FakeCustomerIO) -> set[str]:
    """Stripe event ids of every event and identify that reached this fake (v1 and v2)."""
    seen = {str(e["data"].get("stripe_event_id")) for e in fake.events}
    for record in fake.requests:
        body = record.get("body") or {}
        operations = body.get("batch", [body]) if isinstance(body, dict) else []
        for operation in operations:
            data = operation.get("attributes") or operation.get("data") or {}
            if isinstance(data, dict) and "stripe_event_id" in data:
                seen.add(str(data["stripe_event_id"]))
    return seen


def _events(mode: str, count: int) -> list[dict[str, Any]]:
    livemode = mode == "live"
    return [
        sample_event(
            "invoice.paid",
            livemode=livemode,
            customer_id=f"cus_{mode}{i}",
            email=f"{mode}{i}@example.com",
        )
        for i in range(count)
    ]


def test_test_mode_events_reach_only_the_test_workspace(
    tmp_path: Path, live_cio: FakeCustomerIO, test_cio: FakeCustomerIO
) -> None:
    """With both workspaces configured, live events go only to the live fake and test-mode
    events only to the test fake, with its own credentials, also when the worker batches
    person calls (Track v2) of both modes at once."""
    settings = _settings(tmp_path, live_cio.settings_env("live"), test_cio.settings_env("test"))
    app = create_app(settings, run_worker=True)
    live, test = _events("live", 6), _events("test", 6)
    with serve_app(app) as url:
        for pair in zip(live, test, strict=True):
            for event in pair:
                _post(url, event)
        for event in live + test:
            detail = _final(app.state.services, event["id"])
            assert {d.status for d in detail.deliveries} <= {"succeeded", "skipped"}, detail
            assert "succeeded" in {d.status for d in detail.deliveries}
    live_ids, test_ids = {e["id"] for e in live}, {e["id"] for e in test}
    assert _event_ids(live_cio) == live_ids
    assert _event_ids(test_cio) == test_ids
    assert any(r["path"] == "/api/v2/batch" for r in test_cio.requests)
    assert all(r["status"] < 400 for r in live_cio.requests + test_cio.requests)


def test_without_a_test_workspace_test_mode_events_are_dry_run(
    tmp_path: Path, live_cio: FakeCustomerIO
) -> None:
    """Only live credentials: a test-mode event is dry_run (the exact request recorded, the
    reason says how to configure a test workspace) and nothing of it reaches the live fake."""
    settings = _settings(tmp_path, live_cio.settings_env("live"))
    assert settings.test_mode_events is None
    app = create_app(settings, run_worker=True)
    [test_event], [live_event] = _events("test", 1), _events("live", 1)
    with serve_app(app) as url:
        _post(url, test_event)
        _post(url, live_event)
        detail = _final(app.state.services, test_event["id"])
        _final(app.state.services, live_event["id"])
    computed = [d for d in detail.deliveries if d.status != "skipped"]  # filters skip some
    assert {d.action_type for d in computed} == {"track_event", "identify"}
    for delivery in computed:
        assert delivery.status == "dry_run"
        assert "no test workspace is configured" in (delivery.last_error or "")
        request = delivery.attempts[-1].request
        assert request is not None
        assert request["path"].startswith("/api/v1/customers/")
        if delivery.action_type == "track_event":
            assert request["body"]["data"]["stripe_event_id"] == test_event["id"]
    assert _event_ids(live_cio) == {live_event["id"]}


def test_the_deliver_override_sends_test_events_to_the_live_workspace(
    tmp_path: Path, live_cio: FakeCustomerIO
) -> None:
    """BILLBRIDGE_TEST_MODE_EVENTS=deliver without a test workspace: test-mode events go to
    the live workspace, as before this change."""
    settings = _settings(
        tmp_path, live_cio.settings_env("live"), BILLBRIDGE_TEST_MODE_EVENTS="deliver"
    )
    app = create_app(settings, run_worker=True)
    [test_event] = _events("test", 1)
    with serve_app(app) as url:
        _post(url, test_event)
        detail = _final(app.state.services, test_event["id"])
    assert "succeeded" in {d.status for d in detail.deliveries}
    assert _event_ids(live_cio) == {test_event["id"]}


def test_the_dry_run_override_beats_a_test_workspace(
    tmp_path: Path, live_cio: FakeCustomerIO, test_cio: FakeCustomerIO
) -> None:
    """BILLBRIDGE_TEST_MODE_EVENTS=dry_run: test-mode events reach neither workspace."""
    settings = _settings(
        tmp_path,
        live_cio.settings_env("live"),
        test_cio.settings_env("test"),
        BILLBRIDGE_TEST_MODE_EVENTS="dry_run",
    )
    app = create_app(settings, run_worker=True)
    [test_event] = _events("test", 1)
    with serve_app(app) as url:
        _post(url, test_event)
        detail = _final(app.state.services, test_event["id"])
    assert {d.status for d in detail.deliveries} <= {"dry_run", "skipped"}
    assert "dry_run" in {d.status for d in detail.deliveries}
    assert test_cio.requests == []
    assert live_cio.requests == []


def test_a_test_workspace_saved_on_the_connections_api_applies_at_once(
    tmp_path: Path, live_cio: FakeCustomerIO, test_cio: FakeCustomerIO
) -> None:
    """Saving the test workspace through /api/connections/customerio_test (stored
    encrypted, shown masked, tested) makes the next test-mode event go there."""
    settings = _settings(
        tmp_path,
        live_cio.settings_env("live"),
        CUSTOMERIO_TEST_TRACK_URL=test_cio.url,
        CUSTOMERIO_TEST_APP_URL=test_cio.url,
    )
    app = create_app(settings, run_worker=True)
    [before, after] = _events("test", 2)
    with serve_app(app) as url:
        services: Services = app.state.services
        _post(url, before)
        assert "dry_run" in {d.status for d in _final(services, before["id"]).deliveries}
        saved = httpx.put(
            f"{url}/api/connections/customerio_test",
            json=TEST_CREDENTIALS,
            headers=AUTH,
            timeout=10,
        )
        assert saved.status_code == 200, saved.text
        view = saved.json()
        assert view["test_mode_events"] == "test"
        for secret in (TEST_CREDENTIALS["track_api_key"], TEST_CREDENTIALS["app_api_key"]):
            assert secret not in saved.text
        assert view["connections"]["customerio_test"]["track_api_key"]["source"] == "dashboard"
        checked = httpx.post(
            f"{url}/api/connections/customerio_test/test", headers=AUTH, timeout=10
        )
        assert checked.json()["ok"] is True, checked.text
        assert "test workspace" in checked.json()["detail"]
        stored = services.store.get_credentials()["customerio_test"]
        assert TEST_CREDENTIALS["track_api_key"] not in stored
        _post(url, after)
        assert "succeeded" in {d.status for d in _final(services, after["id"]).deliveries}
    assert _event_ids(test_cio) == {after["id"]}
    assert live_cio.requests == []


def test_doctor_checks_both_workspaces(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_stripe: FakeStripe,
    live_cio: FakeCustomerIO,
    test_cio: FakeCustomerIO,
) -> None:
    """`doctor` probes the live and the test credentials; without a test workspace it warns
    that test-mode events are dry runs; a rejected test key is a failure."""
    use_env(monkeypatch, tmp_path, fake_stripe, live_cio)
    for name in test_cio.settings_env("test"):
        monkeypatch.delenv(name, raising=False)
    assert invoke("migrate").exit_code == 0
    alone = invoke("doctor")
    assert "OK    Customer.io Track API: credentials accepted" in alone.output
    assert "WARN  Customer.io test workspace: none configured: test-mode events are dry runs" in (
        alone.output
    )
    for name, value in test_cio.settings_env("test").items():
        monkeypatch.setenv(name, value)
    both = invoke("doctor")
    assert "OK    Customer.io test workspace: credentials accepted" in both.output, both.output
    assert TEST_CREDENTIALS["track_api_key"] not in both.output
    assert "test workspace App API" not in both.output
    receipt = tmp_path / "receipt.yaml"
    receipt.write_text(
        "id: receipt\nname: Receipt\ntrigger: {events: [invoice.paid]}\n"
        "actions: [{type: send_email, transactional_message_id: 3}]\n"
    )
    assert invoke("workflows", "apply", str(receipt)).exit_code == 0
    monkeypatch.delenv("CUSTOMERIO_TEST_APP_API_KEY")
    no_app_key = invoke("doctor")
    assert "WARN  Customer.io test workspace App API: CUSTOMERIO_TEST_APP_API_KEY is not set" in (
        no_app_key.output
    )
    assert "receipt" in no_app_key.output
    monkeypatch.setenv("CUSTOMERIO_TEST_TRACK_API_KEY", "wrong-key")
    rejected = invoke("doctor")
    assert rejected.exit_code == 1
    assert "FAIL  Customer.io test workspace: credentials rejected" in rejected.output
    assert "CUSTOMERIO_TEST_TRACK_API_KEY" in rejected.output


def test_backfill_with_a_test_key_goes_to_the_test_workspace(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_stripe: FakeStripe,
    live_cio: FakeCustomerIO,
    test_cio: FakeCustomerIO,
) -> None:
    """A test-mode Stripe key's customers: refused without a test workspace (nothing
    reaches the live fake), sent to the test fake only once one is configured."""
    world = generate_world(4, seed=11)
    load_world(fake_stripe, world, events=False)
    assert fake_stripe.api_key.startswith("sk_test_")
    use_env(monkeypatch, tmp_path, fake_stripe)
    for name, value in live_cio.settings_env("live").items():
        monkeypatch.setenv(name, value)
    refused = invoke("backfill")
    assert refused.exit_code != 0
    assert "no Customer.io test workspace is configured" in refused.output
    assert live_cio.requests == []
    for name, value in test_cio.settings_env("test").items():
        monkeypatch.setenv(name, value)
    sent = invoke("backfill")
    assert sent.exit_code == 0, sent.output
    assert "sent to the test workspace" in sent.output
    assert "Late events: 0" in sent.output
    assert set(test_cio.people) >= {c["id"] for c in world.customers}
    assert live_cio.requests == []


def test_the_connections_page_saves_and_tests_the_test_workspace(
    tmp_path: Path, live_cio: FakeCustomerIO, test_cio: FakeCustomerIO
) -> None:
    """Settings → Connections shows where test-mode events go, saves the test workspace's
    credentials (masked afterwards) and tests them against the test fake."""
    settings = _settings(
        tmp_path,
        live_cio.settings_env("live"),
        CUSTOMERIO_TEST_TRACK_URL=test_cio.url,
        CUSTOMERIO_TEST_APP_URL=test_cio.url,
        BILLBRIDGE_ADMIN_PASSWORD=ADMIN_PASSWORD,
    )
    app = create_app(settings, run_worker=False)
    with serve_app(app) as url, logged_in(url) as client:
        page = client.get("/settings/connections")
        assert "Customer.io test workspace" in page.text
        assert "no test workspace is configured" in page.text
        saved = client.post(
            "/settings/connections/customerio_test",
            data={**TEST_CREDENTIALS, "region": "us", "csrf_token": csrf_from(page.text)},
        )
        assert saved.status_code == 200, saved.text
        assert "Saved (encrypted)." in saved.text
        assert "sent to the Customer.io test workspace" in saved.text
        assert TEST_CREDENTIALS["track_api_key"] not in saved.text
        tested = client.post(
            "/settings/connections/customerio_test/test",
            data={"csrf_token": csrf_from(saved.text)},
        )
        assert "Customer.io connection works" in tested.text
        assert "test workspace Track API credentials" in tested.text
    assert [r["path"] for r in test_cio.requests] == ["/api/v1/accounts/region"]
    assert live_cio.requests == []
