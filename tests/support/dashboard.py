"""A Billbridge app on loopback with an admin account, and a logged-in browser-like client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from billbridge.app import create_app
from billbridge.config import Settings
from billbridge.services import Services
from tests.support.auth import API_TOKEN_ENV
from tests.support.live_server import serve_app

ADMIN_PASSWORD = "correct-horse-battery"
WEBHOOK_SECRET = "whsec_dashboard_test"
# Alert settings with every condition off: a test switches on only the one it watches.
ALERTS_QUIET: dict[str, Any] = {
    "on_failures": False,
    "on_stall": False,
    "on_retrying": False,
    "on_signatures": False,
    "on_stripe_silence": False,
    "on_endpoint": False,
    "on_no_worker": False,
    "group_minutes": 0,
}
_CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


def dashboard_settings(tmp_path: Path, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'dashboard.db'}",
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "BILLBRIDGE_VAR_DIR": str(tmp_path / "var"),
        "BILLBRIDGE_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "CUSTOMERIO_SITE_ID": "",
        "CUSTOMERIO_TRACK_API_KEY": "",
        "CUSTOMERIO_APP_API_KEY": "",
        **API_TOKEN_ENV,
        **extra,
    }
    return Settings(**values)


@contextmanager
def running_dashboard(
    settings: Settings, *, run_worker: bool = False
) -> Iterator[tuple[str, Services]]:
    """Serve the app on 127.0.0.1; yields (base URL, its services)."""
    app = create_app(settings, run_worker=run_worker)
    with serve_app(app) as url:
        yield url, app.state.services


def csrf_from(html: str) -> str:
    found = _CSRF_INPUT.search(html)
    assert found, "no csrf_token field in the page"
    return found.group(1)


def login(
    client: httpx.Client, username: str = "admin", password: str = ADMIN_PASSWORD, **headers: str
) -> httpx.Response:
    """GET the login form, then POST it with its CSRF token (redirects not followed)."""
    page = client.get("/login", headers=headers)
    return client.post(
        "/login",
        data={
            "username": username,
            "password": password,
            "next": "/settings/tokens",
            "csrf_token": csrf_from(page.text),
        },
        headers=headers,
    )


@contextmanager
def logged_in(url: str) -> Iterator[httpx.Client]:
    """A client with a session cookie for the admin."""
    with httpx.Client(base_url=url, timeout=20) as client:
        response = login(client)
        assert response.status_code == 303, response.text
        yield client
