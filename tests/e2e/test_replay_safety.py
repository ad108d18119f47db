"""Replays never send a transactional email or broadcast twice unless forced: through the
JSON API, the dashboard's forms and the CLI, against the fake Customer.io counting sends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from billbridge.cli import app as cli_app
from billbridge.services import Services
from billbridge.store.records import FINAL_STATUSES, DeliveryView
from billbridge.stripe.samples import sample_event
from billbridge.stripe.signature import sign_payload
from tests.fakes.customerio import FakeCustomerIO
from tests.support.auth import AUTH
from tests.support.dashboard import (
    WEBHOOK_SECRET,
    csrf_from,
    dashboard_settings,
    logged_in,
    running_dashboard,
)
from tests.support.env import SETTINGS_ENV
from tests.support.live_server import wait_until

RECEIPT = {
    "id": "receipt",
    "name": "Receipt and broadcast",
    "trigger": {"events": ["invoice.paid"]},
    "actions": [
        {"type": "send_email", "transactional_message_id": 7},
        {"type": "trigger_broadcast", "broadcast_id": 3, "recipients": "all"},
    ],
}


@dataclass
class Run:
    url: str
    services: Services
    cio: FakeCustomerIO
    settings_env: dict[str, str]

    def sent(self) -> tuple[int, int]:
        """(transactional emails, broadcast triggers) Customer.io acted on."""
        return len(self.cio.sends), len(self.cio.triggers)

    def deliveries(self, stripe_event_id: str) -> dict[str, DeliveryView]:
        detail = self.services.store.get_event(stripe_event_id)
        assert detail is not None
        return {d.action_type: d for d in detail.deliveries if d.workflow_id == "receipt"}

    def settled(self, stripe_event_id: str, attempts: int) -> None:
        """Wait until every delivery of the event is final with at least `attempts` attempts
        in all (so a replay was picked up and finished)."""

        def done() -> bool:
            detail = self.services.store.get_event(stripe_event_id)
            assert detail is not None
            total = sum(len(d.attempts) for d in detail.deliveries)
            final = all(d.status in FINAL_STATUSES for d in detail.deliveries)
            return final and total >= attempts

        wait_until(done)

    def attempts(self, stripe_event_id: str) -> int:
        detail = self.services.store.get_event(stripe_event_id)
        assert detail is not None
        return sum(len(d.attempts) for d in detail.deliveries)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    """The app with its worker and the receipt workflow; Customer.io times out at 0.5 s."""
    with FakeCustomerIO(app_rate_limit=None) as cio:
        env = {
            **cio.settings_env(),
            "CUSTOMERIO_TIMEOUT": "0.5",
            "BILLBRIDGE_RETRY_SCHEDULE": "0.2",
            "BILLBRIDGE_TRACK_BATCHING": "off",
        }
        settings = dashboard_settings(tmp_path, **env)
        with running_dashboard(settings, run_worker=True) as (url, services):
            created = httpx.post(url + "/api/workflows", json=RECEIPT, headers=AUTH, timeout=10)
            assert created.status_code == 201, created.text
            yield Run(url, services, cio, {"DATABASE_URL": settings.database_url, **env})


def _sent_with_unknown_outcome(run: Run) -> tuple[str, dict[str, DeliveryView]]:
    """An invoice.paid whose email and broadcast both went out but timed out before the
    answer: both failed with outcome "unknown"."""
    run.cio.delay_next(1.5, path_prefix="/v1/send/email")
    run.cio.delay_next(1.5, path_prefix="/v1/campaigns/")
    event = sample_event("invoice.paid", customer_id="cus_Replay1", email="replay@example.com")
    body = json.dumps(event).encode()
    posted = httpx.post(
        run.url + "/webhooks/stripe",
        content=body,
        headers={
            "Content-Type": "application/json",
            "Stripe-Signature": sign_payload(body, WEBHOOK_SECRET),
        },
        timeout=10,
    )
    assert posted.status_code == 200, posted.text
    run.settled(event["id"], 1)
    wait_until(lambda: run.sent() == (1, 1))
    found = run.deliveries(event["id"])
    for delivery in found.values():
        assert delivery.status == "failed"
        assert [a.outcome for a in delivery.attempts] == ["unknown"]
    return str(event["id"]), found


def _ids(found: dict[str, DeliveryView]) -> list[int]:
    return sorted(d.delivery_id for d in found.values())


def test_api_replays_hold_back_unknown_and_sent_sends_unless_forced(run: Run) -> None:
    """POST /api/replay-failed and /api/events/{id}/replay list the email and broadcast in
    `held_back` ("unknown", later "sent") and do not send them; force=true sends them again."""
    event_id, found = _sent_with_unknown_outcome(run)
    held_ids = _ids(found)

    bulk = httpx.post(run.url + "/api/replay-failed", headers=AUTH, timeout=10).json()
    assert {h["delivery_id"]: h["reason"] for h in bulk["held_back"]} == dict.fromkeys(
        held_ids, "unknown"
    )
    assert not set(held_ids) & set(bulk["replayed"])
    assert "timed out" in bulk["held_back"][0]["detail"]

    before = run.attempts(event_id)
    one = httpx.post(f"{run.url}/api/events/{event_id}/replay", headers=AUTH, timeout=10).json()
    assert [h["reason"] for h in one["held_back"]] == ["unknown", "unknown"]
    assert one["skipped_sent"] == []
    assert one["replayed"]  # the other workflows' deliveries
    run.settled(event_id, before + len(one["replayed"]))
    assert run.sent() == (1, 1)
    assert {d.status for d in run.deliveries(event_id).values()} == {"failed"}

    forced = httpx.post(
        f"{run.url}/api/events/{event_id}/replay", params={"force": "true"}, headers=AUTH
    ).json()
    assert set(held_ids) <= set(forced["replayed"])
    assert forced["held_back"] == []
    wait_until(lambda: run.sent() == (2, 2))

    run.settled(event_id, before + len(one["replayed"]) + len(forced["replayed"]))
    again = httpx.post(f"{run.url}/api/events/{event_id}/replay", headers=AUTH).json()
    assert [h["reason"] for h in again["held_back"]] == ["sent", "sent"]
    assert again["skipped_sent"] == held_ids
    run.settled(event_id, run.attempts(event_id))
    assert run.sent() == (2, 2)


def test_dashboard_replays_say_what_was_held_back(run: Run) -> None:
    """The events page's "replay failed" and the event page's Replay (CSRF form posts) hold
    the sends back and say so; "Replay and send again" sends them again."""
    event_id, _ = _sent_with_unknown_outcome(run)
    with logged_in(run.url) as client:
        page = client.get(f"/events/{event_id}")
        assert "Replay and send again" in page.text
        assert "may have sent it" in page.text
        token = csrf_from(page.text)

        bulk = client.post(
            "/events/replay-failed", data={"csrf_token": token}, follow_redirects=True
        )
        assert bulk.status_code == 200
        assert "Held back 2 transactional emails or broadcasts" in bulk.text
        assert "2 with an unknown outcome" in bulk.text

        before = run.attempts(event_id)
        plain = client.post(
            f"/events/{event_id}/replay", data={"csrf_token": token}, follow_redirects=True
        )
        assert "Held back 2 transactional emails or broadcasts" in plain.text
        run.settled(event_id, before + 1)
        assert run.sent() == (1, 1)

        refused = client.post(f"/events/{event_id}/replay", data={"force": "1"})
        assert refused.status_code == 403  # no CSRF token: nothing replayed
        forced = client.post(
            f"/events/{event_id}/replay",
            data={"csrf_token": token, "force": "1"},
            follow_redirects=True,
        )
        assert "Held back" not in forced.text
        wait_until(lambda: run.sent() == (2, 2))


def test_cli_replays_hold_back_unless_forced(
    run: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`replay --failed` and `replay ID` print each held-back send and why; `--force` sends
    it again (the running worker picks the deliveries up)."""
    event_id, found = _sent_with_unknown_outcome(run)
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    for name, value in {**run.settings_env, "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("BILLBRIDGE_VAR_DIR", str(tmp_path / "var"))
    runner = CliRunner()
    email = found["send_email"].delivery_id

    bulk = runner.invoke(cli_app, ["replay", "--failed"])
    assert bulk.exit_code == 0, bulk.output
    assert f"held back #{email} (send_email of receipt)" in bulk.output
    assert "outcome unknown" in bulk.output
    assert "Held back 2 transactional emails or broadcasts" in bulk.output

    before = run.attempts(event_id)
    plain = runner.invoke(cli_app, ["replay", event_id])
    assert plain.exit_code == 0, plain.output
    assert f"{event_id}: held back #{email}" in plain.output
    run.settled(event_id, before + 1)
    assert run.sent() == (1, 1)

    forced = runner.invoke(cli_app, ["replay", "--force", event_id])
    assert forced.exit_code == 0, forced.output
    assert "held back" not in forced.output
    wait_until(lambda: run.sent() == (2, 2))
