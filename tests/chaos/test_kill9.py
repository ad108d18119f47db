"""kill -9 of a running `billbridge serve` under load, then a restart: every acknowledged
event reaches Customer.io exactly once (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from billbridge.stripe.samples import sample_event
from billbridge.stripe.signature import sign_payload
from tests.fakes.customerio import FakeCustomerIO
from tests.support.auth import API_TOKEN_ENV, AUTH
from tests.support.env import FLEET_SECRET_KEY
from tests.support.live_server import ServeProcess, wait_until

SECRET = "whsec_chaos_secret_value"
EVENTS = 240
KILL_AFTER = 80  # acknowledged events before the kill


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/chaos.db"
    return str(request.getfixturevalue("own_postgres_url"))


@pytest.mark.slow
def test_kill9_under_load_then_restart_delivers_every_acknowledged_event_once(
    tmp_path: Path, database_url: str
) -> None:
    """Events acknowledged with 200 before a kill -9 are all delivered after the restart,
    each producing exactly one Customer.io event; nothing secret reaches the log."""
    with FakeCustomerIO() as cio:
        env = {
            **cio.settings_env(),
            "DATABASE_URL": database_url,
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "BILLBRIDGE_SECRET_KEY": FLEET_SECRET_KEY,
            "BILLBRIDGE_RETRY_SCHEDULE": "0.2",
            "BILLBRIDGE_LEASE_SECONDS": "3",
            **API_TOKEN_ENV,
        }
        server = ServeProcess(env, cwd=tmp_path).start()
        # Slow Customer.io a little so deliveries are in flight when the kill lands.
        cio.delay_next(0.05, count=None)
        acknowledged: list[str] = []
        lock = threading.Lock()
        killed = threading.Event()

        def post(index: int) -> None:
            event = sample_event(
                "charge.succeeded",
                customer_id=f"cus_Chaos{index:04d}",
                email=f"chaos{index}@example.com",
            )
            body = json.dumps(event).encode()
            headers = {
                "Content-Type": "application/json",
                "Stripe-Signature": sign_payload(body, SECRET),
            }
            try:
                response = httpx.post(
                    server.url + "/webhooks/stripe", content=body, headers=headers, timeout=5
                )
            except httpx.HTTPError:
                return  # not acknowledged: Stripe would retry it
            if response.status_code == 200:
                with lock:
                    acknowledged.append(event["id"])
                    if len(acknowledged) >= KILL_AFTER and not killed.is_set():
                        killed.set()
                        server.kill9()

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(post, range(EVENTS)))
        assert killed.is_set(), "the load ended before the kill"
        assert len(acknowledged) >= KILL_AFTER

        cio.clear_faults()
        restarted = ServeProcess(env, cwd=tmp_path, port=server.port).start()
        try:

            def delivered() -> bool:
                seen = {e["data"].get("stripe_event_id") for e in cio.events}
                return set(acknowledged) <= seen

            wait_until(delivered, timeout=90, interval=0.2)
            counts = Counter(e["data"].get("stripe_event_id") for e in cio.events)
            assert all(counts[event_id] == 1 for event_id in acknowledged)
            failed = httpx.get(
                restarted.url + "/api/events?status=failed", headers=AUTH, timeout=5
            ).json()
            assert failed["items"] == []
        finally:
            restarted.stop()
        log = server.output()
        for secret in (SECRET, env["CUSTOMERIO_TRACK_API_KEY"], env["CUSTOMERIO_APP_API_KEY"]):
            assert secret not in log
