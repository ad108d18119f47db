"""`serve --no-worker` plus two `billbridge worker` processes on PostgreSQL share the queue:
every delivery is claimed by exactly one worker and attempted exactly once."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import httpx
import pytest

from billbridge.store import open_store
from billbridge.stripe.samples import sample_event
from billbridge.stripe.signature import sign_payload
from tests.fakes.customerio import FakeCustomerIO
from tests.support.env import FLEET_SECRET_KEY
from tests.support.live_server import BILLBRIDGE, ServeProcess, wait_until

SECRET = "whsec_split_roles"
EVENTS = 60


@pytest.mark.postgres
@pytest.mark.slow
def test_two_workers_share_the_queue_without_double_claims(
    tmp_path: Path, own_postgres_url: str
) -> None:
    """Deliveries from one HTTP process are spread over two workers, each attempted once."""
    with FakeCustomerIO() as cio:
        env = {
            **cio.settings_env(),
            "DATABASE_URL": own_postgres_url,
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "BILLBRIDGE_SECRET_KEY": FLEET_SECRET_KEY,
        }
        server = ServeProcess(env, cwd=tmp_path, args=("--no-worker",)).start()
        workers = [
            subprocess.Popen(
                [BILLBRIDGE, "worker", "--concurrency", "4"],
                env={**os.environ, **env},
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(2)
        ]
        try:
            ids = []
            for index in range(EVENTS):
                event = sample_event(
                    "charge.succeeded", customer_id=f"cus_Split{index}", email=f"s{index}@x.io"
                )
                body = json.dumps(event).encode()
                response = httpx.post(
                    server.url + "/webhooks/stripe",
                    content=body,
                    headers={
                        "Content-Type": "application/json",
                        "Stripe-Signature": sign_payload(body, SECRET),
                    },
                    timeout=10,
                )
                assert response.status_code == 200
                ids.append(event["id"])
            wait_until(
                lambda: {e["data"]["stripe_event_id"] for e in cio.events} >= set(ids),
                timeout=60,
                interval=0.2,
            )
            counts = Counter(e["data"]["stripe_event_id"] for e in cio.events)
            assert all(counts[event_id] == 1 for event_id in ids)
            store = open_store(own_postgres_url)
            try:

                def all_final() -> bool:
                    return all(
                        d.status == "succeeded"
                        for event_id in ids
                        for d in store.get_event(event_id).deliveries  # type: ignore[union-attr]
                    )

                # Each event also runs its billing-profile identify.
                wait_until(all_final, timeout=60, interval=0.2)
                for event_id in ids:
                    detail = store.get_event(event_id)
                    assert detail is not None
                    # Never claimed twice: one attempt per delivery, whichever worker took it.
                    assert [len(d.attempts) for d in detail.deliveries] == [1, 1]
                    assert cio.person(f"cus_Split{ids.index(event_id)}") is not None
            finally:
                store.close()
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                assert worker.wait(timeout=30) == 0  # a graceful stop on SIGTERM
            server.stop()
