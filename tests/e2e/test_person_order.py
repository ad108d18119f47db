"""One person, one order: two `billbridge worker` processes and bursts of changes to one
customer; after every burst the person in Customer.io carries the projection's profile."""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from billbridge.billing.profile import compute_profile
from billbridge.store import open_store
from billbridge.store.base import Store
from billbridge.stripe.samples import sample_event
from billbridge.stripe.signature import sign_payload
from tests.fakes.customerio import FakeCustomerIO, Fault
from tests.support.env import FLEET_SECRET_KEY
from tests.support.live_server import BILLBRIDGE, ServeProcess, wait_until

SECRET = "whsec_person_order"
CUSTOMER = "cus_OrderOne"
SUBSCRIPTION = "sub_OrderOne"
BURSTS = 6
CHANGES = 12  # subscription updates and charges per burst
STEP = 2  # changes posted together
TRANSIT = 0.3  # seconds: the longest a Track request travels before Customer.io acts on it
PLANS = [  # (price id, product id, unit amount, interval)
    ("price_OrderBasic", "prod_OrderBasic", 900, "month"),
    ("price_OrderPro", "prod_OrderPro", 2900, "month"),
    ("price_OrderTeam", "prod_OrderTeam", 9900, "month"),
    ("price_OrderYear", "prod_OrderYear", 29000, "year"),
]


def _subscription_update(created: int, rng: random.Random) -> dict[str, Any]:
    """customer.subscription.updated of the one subscription: another plan and quantity."""
    event = sample_event("customer.subscription.updated", customer_id=CUSTOMER, created=created)
    obj = event["data"]["object"]
    obj["id"] = SUBSCRIPTION
    price_id, product, amount, interval = rng.choice(PLANS)
    item = obj["items"]["data"][0]
    item["subscription"] = SUBSCRIPTION
    item["quantity"] = rng.randint(1, 20)
    item["price"].update(
        id=price_id, product=product, unit_amount=amount, unit_amount_decimal=str(amount)
    )
    item["price"]["recurring"]["interval"] = interval
    return event


def _charge(created: int, rng: random.Random) -> dict[str, Any]:
    """charge.succeeded of some amount: total_spent and the payment counts move."""
    event = sample_event("charge.succeeded", customer_id=CUSTOMER, created=created)
    obj = event["data"]["object"]
    obj["amount"] = obj["amount_captured"] = rng.randint(100, 50_000)
    obj["created"] = created
    return event


def _post(client: httpx.Client, url: str, event: dict[str, Any]) -> int:
    body = json.dumps(event).encode()
    headers = {"Content-Type": "application/json", "Stripe-Signature": sign_payload(body, SECRET)}
    return client.post(url + "/webhooks/stripe", content=body, headers=headers).status_code


def _settled(store: Store) -> bool:
    stats = store.stats()
    return stats.queue_depth == 0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'order.db'}"
    return str(request.getfixturevalue("own_postgres_url"))


@pytest.fixture
def fleet(tmp_path: Path, database_url: str) -> Iterator[tuple[str, FakeCustomerIO]]:
    """`serve --no-worker` and two workers on one database; yields (url, fake Customer.io)."""
    with FakeCustomerIO() as cio:
        env = {
            **cio.settings_env(),
            "DATABASE_URL": database_url,
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "BILLBRIDGE_SECRET_KEY": FLEET_SECRET_KEY,
            "BILLBRIDGE_TRACK_BATCHING": "auto",
        }
        server = ServeProcess(env, cwd=tmp_path, args=("--no-worker",)).start()
        workers = [
            subprocess.Popen(
                [BILLBRIDGE, "worker", "--concurrency", "8"],
                env={**os.environ, **env},
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(2)
        ]
        try:
            yield server.url, cio
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                assert worker.wait(timeout=30) == 0  # a graceful stop on SIGTERM
            server.stop()


@pytest.mark.slow
def test_two_workers_leave_one_person_with_the_projections_profile_after_every_burst(
    fleet: tuple[str, FakeCustomerIO], database_url: str
) -> None:
    """Bursts of subscription changes (plans, quantities) and charges to one customer,
    posted two at a time and out of order to `serve --no-worker` while two workers claim
    and send over a network of uneven delays: once each burst's deliveries are final, the
    person's attributes in Customer.io equal the profile computed from the store's
    projection (the newest identify landed last)."""
    url, cio = fleet
    rng = random.Random(13)
    created = 1_790_000_000
    store = open_store(database_url)
    try:
        with httpx.Client(timeout=30) as client, ThreadPoolExecutor(STEP) as pool:
            for burst in range(BURSTS):
                events = []
                for _ in range(CHANGES):
                    created += 1
                    make = _subscription_update if rng.random() < 0.6 else _charge
                    events.append(make(created, rng))
                rng.shuffle(events)
                # A network that delays each request differently: calls sent in one order
                # may arrive in another, unless one person never has two in flight.
                for _ in range(CHANGES * 3):
                    transit = rng.uniform(0, TRANSIT)
                    cio.app.add_fault(Fault(transit=transit, count=1, path_prefix="/api/"))
                for start in range(0, CHANGES, STEP):
                    # Changes keep arriving while the workers send: each step waits until
                    # nothing is waiting to be claimed (not for the sends to land).
                    step = events[start : start + STEP]
                    statuses = list(pool.map(lambda e: _post(client, url, e), step))
                    assert set(statuses) == {200}
                    wait_until(lambda: store.stats().due_now == 0, timeout=30, interval=0.01)
                wait_until(lambda: _settled(store), timeout=60, interval=0.1)
                by_status = store.stats().deliveries_by_status
                assert set(by_status) <= {"succeeded", "skipped"}, by_status
                expected = compute_profile(store, CUSTOMER)
                person = cio.person(CUSTOMER) or {}
                actual = {key: person.get(key) for key in expected}
                assert actual == expected, f"burst {burst}"
    finally:
        store.close()
