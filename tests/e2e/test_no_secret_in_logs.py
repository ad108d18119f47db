"""No credential reaches the log: 500s on every authenticated surface, database errors
during login and while saving a connection, under `billbridge serve` in both log formats."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from billbridge.stripe.samples import sample_event
from billbridge.stripe.signature import sign_payload
from tests.support.live_server import ServeProcess

API_TOKEN = "bb_logtest_api_token_5f1e2d3c4b5a69788796"
ADMIN_PASSWORD = "pw-logtest-Correct-Horse-42"
WEBHOOK_SECRET = "whsec_logtest_webhook_secret_77aa"
STRIPE_KEY = "sk_test_logtest_stripe_key_9q8w7e6r"
CIO_SITE_ID = "site-logtest-41"
CIO_TRACK_KEY = "cio-track-logtest-0a9b8c7d6e"
CIO_APP_KEY = "cio-app-logtest-1f2e3d4c5b"
WORKFLOW = {
    "id": "log-test",
    "name": "Log test",
    "trigger": {"events": ["customer.created"]},
    "actions": [{"type": "identify", "attributes": {"plan": "{{ object.id }}"}}],
}
_CSRF_INPUT = 'name="csrf_token" value="'


def _csrf(html: str) -> str:
    start = html.index(_CSRF_INPUT) + len(_CSRF_INPUT)
    return html[start : html.index('"', start)]


def _status(request: Callable[[], httpx.Response]) -> int:
    """The answer's status; a connection the server dropped mid-answer counts as 500."""
    try:
        return request().status_code
    except (httpx.ReadError, httpx.RemoteProtocolError):
        return 500


def _break(database: Path, *tables: str) -> None:
    """Make every query on `tables` fail (the running server sees the schema change)."""
    with sqlite3.connect(database) as connection:
        for table in tables:
            connection.execute(f"ALTER TABLE {table} RENAME TO {table}_gone")


@pytest.mark.parametrize("log_format", ["console", "json"])
def test_no_secret_reaches_the_log_when_requests_fail(tmp_path: Path, log_format: str) -> None:
    """Requests carrying every kind of credential fail with 500s inside the app (database
    errors); the server's whole log holds tracebacks as text but none of the secrets."""
    database = tmp_path / "logs.db"
    env = {
        "DATABASE_URL": f"sqlite:///{database}",
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "BILLBRIDGE_API_TOKEN": API_TOKEN,
        "BILLBRIDGE_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "BILLBRIDGE_VAR_DIR": str(tmp_path / "var"),
        "BILLBRIDGE_LOG_FORMAT": log_format,
        "CUSTOMERIO_SITE_ID": "",
        "CUSTOMERIO_TRACK_API_KEY": "",
        "CUSTOMERIO_APP_API_KEY": "",
        "STRIPE_API_KEY": "",
        "STRIPE_API_BASE": "http://127.0.0.1:9",  # nothing leaves the machine
        "BILLBRIDGE_RECONCILE_INTERVAL": "0",
    }
    server = ServeProcess(env, cwd=tmp_path, args=("--no-worker",)).start()
    statuses: dict[str, int] = {}
    try:
        bearer = {"Authorization": f"Bearer {API_TOKEN}"}
        with httpx.Client(base_url=server.url, timeout=20) as browser:
            login_page = browser.get("/login")
            logged = browser.post(
                "/login",
                data={
                    "username": "admin",
                    "password": ADMIN_PASSWORD,
                    "next": "/",
                    "csrf_token": _csrf(login_page.text),
                },
            )
            assert logged.status_code == 303, logged.text
            cookie = browser.cookies["billbridge_session"]
            csrf = _csrf(browser.get("/settings/connections").text)

            _break(database, "events", "workflows")
            api = httpx.Client(base_url=server.url, headers=bearer, timeout=20)
            statuses["api events"] = _status(lambda: api.get("/api/events"))
            statuses["api event"] = _status(lambda: api.get("/api/events/evt_x"))
            statuses["api workflow save"] = _status(
                lambda: api.post("/api/workflows", json=WORKFLOW)
            )
            statuses["api session"] = _status(lambda: browser.get("/api/events"))
            statuses["events page"] = _status(lambda: browser.get("/events"))
            statuses["overview"] = _status(lambda: browser.get("/"))
            body = json.dumps(sample_event("customer.created")).encode()
            statuses["webhook"] = _status(
                lambda: httpx.post(
                    f"{server.url}/webhooks/stripe",
                    content=body,
                    headers={
                        "Content-Type": "application/json",
                        "Stripe-Signature": sign_payload(body, WEBHOOK_SECRET),
                    },
                )
            )

            _break(database, "credentials")
            statuses["api stripe key"] = _status(
                lambda: api.put("/api/connections/stripe", json={"api_key": STRIPE_KEY})
            )
            statuses["api customerio keys"] = _status(
                lambda: api.put(
                    "/api/connections/customerio",
                    json={
                        "site_id": CIO_SITE_ID,
                        "track_api_key": CIO_TRACK_KEY,
                        "app_api_key": CIO_APP_KEY,
                    },
                )
            )
            statuses["page stripe key"] = _status(
                lambda: browser.post(
                    "/settings/connections/stripe", data={"api_key": STRIPE_KEY, "csrf_token": csrf}
                )
            )
            api.close()

        _break(database, "sessions")
        with httpx.Client(base_url=server.url, timeout=20) as stranger:
            login_page = stranger.get("/login")
            statuses["login"] = _status(
                lambda: stranger.post(
                    "/login",
                    data={
                        "username": "admin",
                        "password": ADMIN_PASSWORD,
                        "next": "/",
                        "csrf_token": _csrf(login_page.text),
                    },
                )
            )
    finally:
        server.stop()
    log = server.output()
    failed = {name for name, status in statuses.items() if status >= 500}
    assert failed == set(statuses), statuses  # each surface really failed inside the app
    assert "Traceback (most recent call last)" in log  # tracebacks are kept, as text
    secrets = {
        "API token": API_TOKEN,
        "session cookie": cookie,
        "password": ADMIN_PASSWORD,
        "Stripe key": STRIPE_KEY,
        "Customer.io track key": CIO_TRACK_KEY,
        "Customer.io app key": CIO_APP_KEY,
        "webhook secret": WEBHOOK_SECRET,
    }
    leaked = {name for name, secret in secrets.items() if secret in log}
    assert not leaked, f"{leaked} in the log"
    if log_format == "json":
        lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        tracebacks = [line["exception"] for line in lines if "exception" in line]
        assert tracebacks
        assert all(isinstance(text, str) and "Traceback" in text for text in tracebacks)
