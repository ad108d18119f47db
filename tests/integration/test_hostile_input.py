"""Hostile input over loopback HTTP: templates, headers, numbers and nesting never make a 500."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from billbridge.app import create_app
from billbridge.config import Settings
from tests.support.auth import API_TOKEN_ENV, AUTH
from tests.support.live_server import serve_app

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
