"""Connections over real HTTP: encrypted at rest, masked, env read-only, tested, used at once."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import pytest

from billbridge.stripe.samples import sample_event
from billbridge.stripe.signature import sign_payload
from tests.fakes.customerio import FakeCustomerIO
from tests.fakes.stripe_api import FakeStripe
from tests.support.auth import AUTH
from tests.support.dashboard import (
    WEBHOOK_SECRET,
    dashboard_settings,
    logged_in,
    running_dashboard,
)
from tests.support.live_server import wait_until

TRACK_KEY = "trk_0123456789abcdefSECRET"


def _webhook(url: str, event: dict[str, object]) -> None:
    body = json.dumps(event).encode()
    response = httpx.post(
        url + "/webhooks/stripe",
        content=body,
        headers={
            "Content-Type": "application/json",
            "Stripe-Signature": sign_payload(body, WEBHOOK_SECRET),
        },
        timeout=10,
    )
    assert response.status_code == 200


def test_saved_credentials_are_encrypted_and_never_shown(tmp_path: Path) -> None:
    """The DB row holds no key; the API and the page show only a masked value."""
    settings = dashboard_settings(tmp_path)
    with running_dashboard(settings) as (url, _):
        saved = httpx.put(
            url + "/api/connections/customerio",
            json={"site_id": "site123456789", "track_api_key": TRACK_KEY},
            headers=AUTH,
            timeout=10,
        )
        assert saved.status_code == 200, saved.text
        shown = saved.json()["connections"]["customerio"]["track_api_key"]
        assert shown["source"] == "dashboard"
        assert shown["value"] == "trk_…CRET"
        assert TRACK_KEY not in saved.text
        assert TRACK_KEY not in httpx.get(url + "/api/connections", headers=AUTH).text
        with logged_in(url) as client:
            page = client.get("/settings/connections")
            assert page.status_code == 200
            assert "trk_…CRET" in page.text
            assert TRACK_KEY not in page.text
    with sqlite3.connect(tmp_path / "dashboard.db") as db:
        rows = db.execute("SELECT name, ciphertext FROM credentials").fetchall()
    assert [name for name, _ in rows] == ["customerio"]
    assert TRACK_KEY not in rows[0][1]
    assert "site123456789" not in rows[0][1]


def test_environment_values_win_and_are_read_only(tmp_path: Path) -> None:
    """A key set in the environment is shown as such and cannot be changed from the API."""
    settings = dashboard_settings(tmp_path, STRIPE_API_KEY="sk_test_fromenv_abcdefgh1234")
    with running_dashboard(settings) as (url, _):
        refused = httpx.put(
            url + "/api/connections/stripe",
            json={"api_key": "sk_test_other_key_000000"},
            headers=AUTH,
            timeout=10,
        )
        assert refused.status_code == 422
        assert "STRIPE_API_KEY" in refused.json()["errors"]["api_key"]
        assert "sk_test_other" not in refused.text
        shown = httpx.get(url + "/api/connections", headers=AUTH, timeout=10).json()
        assert shown["connections"]["stripe"]["api_key"] == {
            "label": "Secret or restricted key",
            "set": True,
            "value": "sk_test_…1234",
            "source": "env",
            "env": "STRIPE_API_KEY",
            "secret": True,
        }


def test_customerio_test_connection_detects_and_saves_the_region(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """ "Test connection" calls GET /api/v1/accounts/region on the fake and keeps region eu."""
    with FakeCustomerIO(region="eu") as cio:
        env = cio.settings_env()
        settings = dashboard_settings(
            tmp_path, CUSTOMERIO_TRACK_URL=env["CUSTOMERIO_TRACK_URL"], CUSTOMERIO_APP_URL=cio.url
        )
        with running_dashboard(settings) as (url, _):
            httpx.put(
                url + "/api/connections/customerio",
                json={"site_id": "wrong", "track_api_key": "wrong-key-value"},
                headers=AUTH,
                timeout=10,
            )
            bad = httpx.post(url + "/api/connections/customerio/test", headers=AUTH, timeout=20)
            assert bad.json()["ok"] is False
            assert "wrong-key-value" not in bad.text
            httpx.put(
                url + "/api/connections/customerio",
                json={
                    "site_id": env["CUSTOMERIO_SITE_ID"],
                    "track_api_key": env["CUSTOMERIO_TRACK_API_KEY"],
                },
                headers=AUTH,
                timeout=10,
            )
            good = httpx.post(url + "/api/connections/customerio/test", headers=AUTH, timeout=20)
            assert good.json()["ok"] is True, good.text
            assert good.json()["region"] == "eu"
            shown = httpx.get(url + "/api/connections", headers=AUTH, timeout=10).json()
            assert shown["connections"]["customerio"]["region"]["value"] == "eu"
        assert any(r["path"] == "/api/v1/accounts/region" for r in cio.requests)
    logged = capfd.readouterr()
    for secret in ("wrong-key-value", env["CUSTOMERIO_TRACK_API_KEY"]):
        assert secret not in logged.out + logged.err


def test_stripe_test_connection_reads_the_fake(tmp_path: Path) -> None:
    """A saved Stripe key is checked with one cheap read; a wrong key fails without echo."""
    with FakeStripe() as stripe:
        settings = dashboard_settings(tmp_path, STRIPE_API_BASE=stripe.base_url)
        with running_dashboard(settings) as (url, _):
            for key, ok in (("sk_test_wrong_key_1234567890", False), (stripe.api_key, True)):
                saved = httpx.put(
                    url + "/api/connections/stripe",
                    json={"api_key": key},
                    headers=AUTH,
                    timeout=10,
                )
                assert saved.status_code == 200, saved.text
                tested = httpx.post(url + "/api/connections/stripe/test", headers=AUTH, timeout=30)
                assert tested.json()["ok"] is ok, tested.text
                assert key not in tested.text


def test_saved_credentials_apply_without_a_restart(tmp_path: Path) -> None:
    """Dry run before; after saving Customer.io credentials the next delivery reaches the fake."""
    with FakeCustomerIO() as cio:
        env = cio.settings_env()
        settings = dashboard_settings(
            tmp_path,
            CUSTOMERIO_TRACK_URL=cio.url,
            CUSTOMERIO_APP_URL=cio.url,
            BILLBRIDGE_RETRY_SCHEDULE="0.2",
        )
        with running_dashboard(settings, run_worker=True) as (url, services):
            before = sample_event("customer.created", livemode=True)
            _webhook(url, before)

            def status_of(event_id: str) -> str | None:
                detail = services.store.get_event(event_id)
                statuses = {d.status for d in detail.deliveries} if detail else set()
                final = statuses and not statuses & {"pending", "retrying"}
                return ",".join(sorted(statuses)) if final else None

            assert wait_until(lambda: status_of(before["id"]), timeout=30) == "dry_run"
            assert cio.events == []
            assert cio.requests == []
            saved = httpx.put(
                url + "/api/connections/customerio",
                json={
                    "site_id": env["CUSTOMERIO_SITE_ID"],
                    "track_api_key": env["CUSTOMERIO_TRACK_API_KEY"],
                    "app_api_key": env["CUSTOMERIO_APP_API_KEY"],
                },
                headers=AUTH,
                timeout=10,
            )
            assert saved.json()["dry_run"] is False
            after = sample_event("customer.created", livemode=True)
            _webhook(url, after)
            assert "succeeded" in wait_until(lambda: status_of(after["id"]), timeout=30)
            assert cio.requests
