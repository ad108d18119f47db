"""Hostile input over loopback HTTP: templates, headers, numbers and nesting never make a 500."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from billbridge.app import create_app
from billbridge.config import Settings
from billbridge.stripe.samples import sample_event
from billbridge.stripe.signature import sign_payload
from billbridge.web.auth import ApiGuard
from tests.support.auth import API_TOKEN_ENV, AUTH
from tests.support.live_server import serve_app, wait_until

SECRET = "whsec_hostile_test_secret"
POWER_LOOP = (
    "{% set ns = namespace(x=10**64) %}{% for i in range(4) %}"
    "{% set ns.x = ns.x ** 64 %}{% endfor %}{{ ns.x > 0 }}"
)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[httpx.Client]:
    settings = Settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'hostile.db'}",
        STRIPE_WEBHOOK_SECRET=SECRET,
        BILLBRIDGE_VAR_DIR=str(tmp_path / "var"),
        **API_TOKEN_ENV,
    )
    app = create_app(settings, run_worker=False)
    with serve_app(app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=30) as http:
        yield http


def test_a_hostile_template_on_the_test_endpoint_fails_fast_and_the_process_answers(
    client: httpx.Client,
) -> None:
    """The issue's `ns.x ** 64` loop on POST /api/workflows/{id}/test is an error step in
    well under a second, not a 19 s (or hours) stall of the process."""
    workflow = {
        "id": "stall",
        "name": "Stall",
        "trigger": {"events": ["customer.created"]},
        "actions": [{"type": "identify", "attributes": {"x": POWER_LOOP}}],
    }
    assert client.post("/api/workflows", json=workflow).status_code == 201
    started = time.perf_counter()
    response = client.post("/api/workflows/stall/test")
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    (step,) = response.json()["requests"]
    assert step["status"] == "error"
    assert "integer over 4096 bits" in step["reason"]
    assert elapsed < 1.0
    assert client.get("/healthz").status_code == 200


def test_a_hostile_template_fails_its_delivery_once_in_the_worker(tmp_path: Path) -> None:
    """In the worker, the same template fails its delivery at the first attempt (terminal,
    not retried) with the limit in the error; the webhook and /healthz keep answering."""
    settings = Settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'worker.db'}",
        STRIPE_WEBHOOK_SECRET=SECRET,
        BILLBRIDGE_VAR_DIR=str(tmp_path / "var"),
        CUSTOMERIO_SITE_ID="",
        CUSTOMERIO_TRACK_API_KEY="",
        CUSTOMERIO_APP_API_KEY="",
        **API_TOKEN_ENV,
    )
    app = create_app(settings, run_worker=True)
    workflow = {
        "id": "stall",
        "name": "Stall",
        "trigger": {"events": ["customer.created"]},
        "actions": [{"type": "identify", "attributes": {"x": POWER_LOOP}}],
    }
    with serve_app(app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=30) as http:
        assert http.post("/api/workflows", json=workflow).status_code == 201
        event = sample_event("customer.created", event_id="evt_hostile_worker")
        body = json.dumps(event).encode()
        answer = http.post(
            "/webhooks/stripe",
            content=body,
            headers={
                "Content-Type": "application/json",
                "Stripe-Signature": sign_payload(body, SECRET),
            },
        )
        assert answer.status_code == 200

        def failed_delivery() -> dict[str, Any] | None:
            detail = http.get("/api/events/evt_hostile_worker").json()
            found = [d for d in detail["deliveries"] if d["workflow_id"] == "stall"]
            return found[0] if found and found[0]["status"] == "failed" else None

        delivery = wait_until(failed_delivery, timeout=20)
        assert delivery["attempt_count"] == 1
        assert "integer over 4096 bits" in delivery["last_error"]
        assert delivery["attempts"][0]["outcome"] == "terminal_error"
        assert http.get("/healthz").status_code == 200


def test_the_api_guard_matches_the_route_path_under_a_root_path(tmp_path: Path) -> None:
    """Served under `--root-path /bb` (the scope's path is then `/bb/api/...`), `/api/*`
    still needs credentials: the guard strips the root path as the router does."""
    settings = Settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'rooted.db'}",
        STRIPE_WEBHOOK_SECRET=SECRET,
        BILLBRIDGE_VAR_DIR=str(tmp_path / "var"),
        **API_TOKEN_ENV,
    )
    app = create_app(settings, run_worker=False)
    with serve_app(app, root_path="/bb") as url, httpx.Client(base_url=url, timeout=30) as http:
        anonymous = http.get("/api/workflows")
        assert anonymous.status_code == 401, anonymous.text
        assert http.get("/api/workflows", headers=AUTH).status_code == 200
        assert http.get("/openapi.json").status_code == 401


def test_every_api_route_depends_on_the_auth_check(tmp_path: Path) -> None:
    """With the ApiGuard middleware taken out, every /api route (each path and method of
    the schema) still answers 401 without credentials: its router depends on the check."""
    settings = Settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'unguarded.db'}",
        STRIPE_WEBHOOK_SECRET=SECRET,
        BILLBRIDGE_VAR_DIR=str(tmp_path / "var"),
        BILLBRIDGE_PUBLIC_API_DOCS=True,
    )
    app = create_app(settings, run_worker=False)
    app.user_middleware = [m for m in app.user_middleware if m.cls is not ApiGuard]
    operations = [
        (method, path.replace("{", "").replace("}", ""))
        for path, item in app.openapi()["paths"].items()
        if path.startswith("/api")
        for method in item
    ]
    assert len(operations) > 10
    with serve_app(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        answers = {(m, p): http.request(m.upper(), p, json={}).status_code for m, p in operations}
    assert {key: status for key, status in answers.items() if status != 401} == {}


@pytest.mark.parametrize(
    ("path", "authenticated"),
    [
        ("/login", False),
        ("/api/events", True),
        ("/api/events", False),  # the guard's 401
        ("/static/app.css", False),
        ("/healthz", False),
        ("/nope", False),
    ],
)
def test_security_headers_are_on_every_answer(
    client: httpx.Client, path: str, authenticated: bool
) -> None:
    """CSP without inline scripts, no framing, nosniff and a referrer policy everywhere."""
    headers = None if authenticated else {"Authorization": ""}
    response = client.get(path, headers=headers)
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp.split("script-src", 1)[1].split(";", 1)[0]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"


def test_api_docs_need_credentials_and_load_nothing_from_a_cdn(client: httpx.Client) -> None:
    """/docs and /redoc (Swagger UI and ReDoc from a CDN) are off; /openapi.json needs the
    token or a login."""
    anonymous = {"Authorization": ""}
    assert client.get("/docs", headers=anonymous).status_code == 404
    assert client.get("/redoc", headers=anonymous).status_code == 404
    assert client.get("/docs").status_code == 404
    assert client.get("/openapi.json", headers=anonymous).status_code == 401
    assert client.get("/openapi.json").json()["info"]["title"] == "Billbridge"


def test_public_api_docs_option_opens_the_schema(tmp_path: Path) -> None:
    """BILLBRIDGE_PUBLIC_API_DOCS=true serves /openapi.json without credentials."""
    settings = Settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'public.db'}",
        STRIPE_WEBHOOK_SECRET=SECRET,
        BILLBRIDGE_VAR_DIR=str(tmp_path / "var"),
        BILLBRIDGE_PUBLIC_API_DOCS=True,
    )
    app = create_app(settings, run_worker=False)
    with serve_app(app) as url:
        assert httpx.get(f"{url}/openapi.json", timeout=30).status_code == 200
        assert httpx.get(f"{url}/api/events", timeout=30).status_code == 401
