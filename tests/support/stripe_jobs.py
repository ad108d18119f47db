"""Helpers for tests of the Stripe-side commands (reconcile, backfill, setup-webhook)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from billbridge.cli import app
from billbridge.config import Settings
from tests.fakes.customerio import FakeCustomerIO
from tests.fakes.stripe_api import FakeStripe
from tests.support.env import SETTINGS_ENV

SECRET = "whsec_stripe_jobs_test"
CLEARED = SETTINGS_ENV


def use_env(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    stripe: FakeStripe,
    cio: FakeCustomerIO | None = None,
    **extra: str,
) -> Settings:
    """Point the environment (what the CLI reads) at the fakes and a fresh SQLite file;
    returns the same configuration as Settings (for an app in the test's process)."""
    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env
    values = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
        "STRIPE_API_KEY": stripe.api_key,
        "STRIPE_API_BASE": stripe.base_url,
        "BILLBRIDGE_VAR_DIR": str(tmp_path / "var"),
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "BILLBRIDGE_RECONCILE_INTERVAL": "0",
        "BILLBRIDGE_RETRY_SCHEDULE": "0.2",
        **(cio.settings_env() if cio is not None else {}),
        **extra,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return Settings(**values)  # type: ignore[arg-type]


def invoke(*args: str) -> Result:
    """Run `billbridge ARGS...` in-process."""
    return CliRunner().invoke(app, list(args))


def cio_track_events(cio: FakeCustomerIO) -> Counter[tuple[str, str]]:
    """(stripe_event_id, event name) of every Customer.io event call answered 2xx: v1
    event requests, and event operations inside accepted Track v2 batches."""
    seen: Counter[tuple[str, str]] = Counter()
    for record in cio.requests:
        body: Any = record.get("body")
        status = record.get("status") or 0
        if not (200 <= status < 300) or not isinstance(body, dict):
            continue
        if str(record["path"]).endswith("/events") and isinstance(body.get("data"), dict):
            seen[(str(body["data"].get("stripe_event_id")), str(body.get("name")))] += 1
        elif record["path"] == "/api/v2/batch" and status == 200:
            for operation in body.get("batch") or []:
                data = operation.get("attributes")
                if operation.get("action") == "event" and isinstance(data, dict):
                    seen[(str(data.get("stripe_event_id")), str(operation.get("name")))] += 1
    return seen
