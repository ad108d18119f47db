"""Access over real HTTP: login, sessions, cookie flags, CSRF, the login throttle, API auth."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from billbridge.accounts import hash_token
from billbridge.cli import app as cli_app
from billbridge.services import Services
from billbridge.store import open_store
from billbridge.stripe.samples import sample_event
from billbridge.stripe.signature import sign_payload
from tests.support.auth import API_TOKEN, AUTH
from tests.support.dashboard import (
    ADMIN_PASSWORD,
    WEBHOOK_SECRET,
    csrf_from,
    dashboard_settings,
    logged_in,
    login,
    running_dashboard,
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Services]]:
    with running_dashboard(dashboard_settings(tmp_path)) as running:
        yield running


def test_login_sets_a_flagged_session_cookie_and_logout_ends_it(
    server: tuple[str, Services],
) -> None:
    """Login answers 303 to `next` with an HttpOnly, SameSite=Lax cookie; logout ends it."""
    url, _ = server
    with httpx.Client(base_url=url, timeout=20) as client:
        assert client.get("/settings/tokens").headers["location"].startswith("/login?next=")
        response = login(client)
        assert response.status_code == 303
        assert response.headers["location"] == "/settings/tokens"
        cookie = next(
            c for c in response.headers.get_list("set-cookie") if "billbridge_session=" in c
        )
        assert "HttpOnly" in cookie
        assert "SameSite=lax" in cookie
        assert "Secure" not in cookie  # plain http, no setting
        page = client.get("/settings/tokens")
        assert page.status_code == 200
        assert "admin" in page.text
        out = client.post("/logout", data={"csrf_token": csrf_from(page.text)})
        assert out.status_code == 303
        assert client.get("/settings/tokens").status_code == 303


def test_cookie_is_secure_behind_https(tmp_path: Path) -> None:
    """A request that arrived over https (X-Forwarded-Proto from a trusted proxy) gets Secure."""
    settings = dashboard_settings(tmp_path, BILLBRIDGE_FORWARDED_ALLOW_IPS="127.0.0.1")
    with running_dashboard(settings) as (url, _):
        _check_secure_cookie_over_https(url)


def test_forwarded_proto_from_an_untrusted_peer_is_ignored(server: tuple[str, Services]) -> None:
    """Without BILLBRIDGE_FORWARDED_ALLOW_IPS, X-Forwarded-Proto from 127.0.0.1 is not
    believed: the cookie is not Secure."""
    url, _ = server
    page = httpx.get(url + "/login", headers={"X-Forwarded-Proto": "https"}, timeout=20)
    assert "Secure" not in page.headers["set-cookie"]


def _check_secure_cookie_over_https(url: str) -> None:
    https = {"X-Forwarded-Proto": "https"}
    page = httpx.get(url + "/login", headers=https, timeout=20)
    assert "Secure" in page.headers["set-cookie"]
    csrf = csrf_from(page.text)
    # httpx keeps Secure cookies off plain http, so the cookie goes back by hand.
    response = httpx.post(
        url + "/login",
        data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": csrf},
        headers={**https, "Cookie": f"billbridge_csrf={csrf}"},
        timeout=20,
    )
    assert response.status_code == 303
    assert "Secure" in response.headers["set-cookie"]


def test_form_posts_without_the_csrf_token_are_refused(server: tuple[str, Services]) -> None:
    """Login and settings forms answer 403 without the right csrf_token."""
    url, services = server
    with httpx.Client(base_url=url, timeout=20) as client:
        refused = client.post("/login", data={"username": "admin", "password": ADMIN_PASSWORD})
        assert refused.status_code == 403
    with logged_in(url) as client:
        assert client.post("/settings/tokens", data={"name": "x"}).status_code == 403
        forged = client.post("/settings/tokens", data={"name": "x", "csrf_token": "forged" * 8})
        assert forged.status_code == 403
        assert services.store.list_api_tokens() == []
        page = client.get("/settings/tokens")
        made = client.post(
            "/settings/tokens", data={"name": "x", "csrf_token": csrf_from(page.text)}
        )
        assert made.status_code == 200
        assert len(services.store.list_api_tokens()) == 1


def test_password_is_stored_as_an_argon2_hash(server: tuple[str, Services]) -> None:
    """BILLBRIDGE_ADMIN_PASSWORD made the admin; the row holds an argon2id hash, not the text."""
    _, services = server
    user = services.store.get_user("admin")
    assert user is not None
    assert user.password_hash.startswith("$argon2id$")
    assert ADMIN_PASSWORD not in user.password_hash


def test_api_requires_a_token_or_a_session(server: tuple[str, Services]) -> None:
    """401 without credentials; 200 with BILLBRIDGE_API_TOKEN or a created token; revoked 401."""
    url, _ = server
    anonymous = httpx.get(url + "/api/events", timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(url + "/api/events", headers=AUTH, timeout=10).status_code == 200
    wrong = {"Authorization": "Bearer bb_not_a_token"}
    assert httpx.get(url + "/api/events", headers=wrong, timeout=10).status_code == 401
    created = httpx.post(url + "/api/tokens", json={"name": "ci"}, headers=AUTH, timeout=10)
    assert created.status_code == 201
    token = created.json()["token"]
    mine = {"Authorization": f"Bearer {token}"}
    assert httpx.get(url + "/api/workflows", headers=mine, timeout=10).status_code == 200
    listed = httpx.get(url + "/api/tokens", headers=mine, timeout=10).text
    assert token not in listed
    assert API_TOKEN not in listed
    revoked = httpx.delete(f"{url}/api/tokens/{created.json()['id']}", headers=AUTH, timeout=10)
    assert revoked.status_code == 200
    assert httpx.get(url + "/api/events", headers=mine, timeout=10).status_code == 401


def test_api_with_a_session_needs_the_csrf_header_for_writes(
    server: tuple[str, Services],
) -> None:
    """A session may read the API; an unsafe method also needs X-CSRF-Token."""
    url, _ = server
    with logged_in(url) as client:
        assert client.get("/api/events").status_code == 200
        assert client.post("/api/tokens", json={"name": "s"}).status_code == 403
        csrf = csrf_from(client.get("/settings/tokens").text)
        made = client.post("/api/tokens", json={"name": "s"}, headers={"X-CSRF-Token": csrf})
        assert made.status_code == 201


def test_webhook_health_and_metrics_stay_open(server: tuple[str, Services]) -> None:
    """No credentials needed for the webhook, /healthz, /readyz and /metrics."""
    url, _ = server
    assert httpx.get(url + "/healthz", timeout=10).status_code == 200
    assert httpx.get(url + "/readyz", timeout=10).status_code == 200
    assert httpx.get(url + "/metrics", timeout=10).status_code == 200
    body = json.dumps(sample_event("customer.created")).encode()
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


def test_cli_creates_the_admin_and_manages_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`admin create` hashes the password; `tokens create` prints a token stored only hashed."""
    database_url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("BILLBRIDGE_VAR_DIR", str(tmp_path / "var"))
    runner = CliRunner()
    made = runner.invoke(
        cli_app,
        ["admin", "create", "--username", "ops", "--password-stdin"],
        input="long-enough-pw\n",
    )
    assert made.exit_code == 0, made.output
    again = runner.invoke(
        cli_app,
        ["admin", "create", "--username", "ops", "--password-stdin"],
        input="another-pw-1\n",
    )
    assert again.exit_code == 1
    created = runner.invoke(cli_app, ["tokens", "create", "deploy"])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[0]
    assert token.startswith("bb_")
    listed = runner.invoke(cli_app, ["tokens", "list"])
    assert "deploy" in listed.stdout
    assert token not in listed.stdout
    store = open_store(database_url)
    try:
        user = store.get_user("ops")
        assert user is not None
        assert user.password_hash.startswith("$argon2id$")
        assert store.find_api_token(hash_token(token)) is not None
        record = store.list_api_tokens()[0]
        assert runner.invoke(cli_app, ["tokens", "revoke", str(record.token_id)]).exit_code == 0
        assert store.find_api_token(hash_token(token)) is None
    finally:
        store.close()
