"""Several hosts, proven: `serve --no-worker` on host A and `billbridge worker` on hosts B and C,
each in its own network namespace, share one PostgreSQL and one (fake) Customer.io in the
root namespace. Under steady signed load, B's worker is killed with -9 mid-batch, and later
C's link to PostgreSQL is cut for longer than the lease and restored. Every acknowledged
event reaches Customer.io, each Customer.io event is stored once under its deterministic id,
re-sends happen only for deliveries whose worker died or was cut off between send and
record, the cut-off worker's late finish is refused by its fencing token, and nothing is
left pending.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import psycopg
import pytest

from billbridge.store import open_store
from billbridge.stripe.samples import sample_event
from billbridge.stripe.signature import sign_payload
from tests.fakes.customerio import FakeCustomerIO
from tests.support.live_server import BILLBRIDGE, wait_until
from tests.support.netns import TestNetwork

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(300)]

SECRET = "whsec_several_hosts"
LEASE_SECONDS = 6
SENDERS = 4  # concurrent webhook senders
APP_PORT = 8000
CIO_PORT = 9001
FENCED = "lease lost before completion"  # the worker's warning when its finish is fenced out


@dataclass
class Load:
    """Signed charge events posted to host A until stopped; the acknowledged ids."""

    url: str
    acknowledged: list[str] = field(default_factory=list)
    refused: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, sender: int) -> None:
        index = 0
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                index += 1
                event = sample_event(
                    "charge.succeeded",
                    customer_id=f"cus_Host{sender}x{index:05d}",
                    email=f"host{sender}.{index}@example.com",
                )
                body = json.dumps(event).encode()
                try:
                    answer = client.post(
                        self.url + "/webhooks/stripe",
                        content=body,
                        headers={
                            "Content-Type": "application/json",
                            "Stripe-Signature": sign_payload(body, SECRET),
                        },
                    )
                except httpx.HTTPError:
                    answer = None
                with self.lock:
                    if answer is not None and answer.status_code == 200:
                        self.acknowledged.append(event["id"])
                    else:
                        self.refused += 1

    def count(self) -> int:
        with self.lock:
            return len(self.acknowledged)


def _claims(conninfo: str) -> dict[int, str]:
    """Deliveries under a live lease right now: id -> claim id (the fencing token)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id, claim_id FROM deliveries WHERE claim_id IS NOT NULL"
            " AND lease_until > extract(epoch FROM clock_timestamp())"
        ).fetchall()
    return {int(row[0]): str(row[1]) for row in rows}


def _taken_over(conninfo: str, held: dict[int, str]) -> bool:
    """True once every delivery of `held` is finished or claimed under another claim id
    (a lease merely running out is not enough: someone must have taken it)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id, claim_id, status FROM deliveries WHERE id = ANY(%s)", (list(held),)
        ).fetchall()
    return all(
        status not in ("pending", "retrying") or (claim is not None and claim != held[int(i)])
        for i, claim, status in rows
    )


@pytest.fixture
def network() -> Iterator[TestNetwork]:
    with TestNetwork(["a", "b", "c"]) as net:
        yield net


def test_fleet_survives_a_killed_worker_and_a_cut_database_link(
    tmp_path: Path, own_postgres_url: str, network: TestNetwork
) -> None:
    """kill -9 of one worker and a database cut of another under load lose nothing,
    double nothing at Customer.io, and leave nothing pending."""
    store = open_store(own_postgres_url)
    store.migrate()
    conninfo = own_postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)
    database = own_postgres_url.rsplit("/", 1)[1]
    logs: dict[str, IO[bytes]] = {}

    def start(host: str, *command: str) -> None:
        log = logs.setdefault(host, (tmp_path / f"host-{host}.log").open("ab"))
        network.run(host, [BILLBRIDGE, *command], env=env, cwd=tmp_path, output=log)

    with FakeCustomerIO(app_rate_limit=None) as cio:
        network.relay_into_hub("db", 5432, to=("127.0.0.1", 5432))
        network.relay_into_hub("app", CIO_PORT, to=("127.0.0.1", cio.port))
        cio_url = f"http://{network.hub_address('app')}:{CIO_PORT}"
        # Both workspaces (live and test) of the fake, reached through the hub.
        fake_env = {k: cio_url if v == cio.url else v for k, v in cio.settings_env().items()}
        env = {
            **os.environ,
            **fake_env,
            "DATABASE_URL": (
                f"postgresql+psycopg://postgres@{network.hub_address('db')}:5432/{database}"
            ),
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "BILLBRIDGE_SECRET_KEY": "several-hosts-test-secret-key",
            "BILLBRIDGE_LEASE_SECONDS": str(LEASE_SECONDS),
            "BILLBRIDGE_RETRY_SCHEDULE": "0.5",
            "BILLBRIDGE_RECONCILE_INTERVAL": "0",
        }
        start(
            "a",
            "serve",
            "--no-worker",
            "--host",
            network.address("a", "app"),
            "--port",
            str(APP_PORT),
        )
        app = network.relay_to_host("a", APP_PORT)
        app_url = f"http://127.0.0.1:{app.port}"

        def ready() -> bool:
            try:
                return httpx.get(app_url + "/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=60, interval=0.2)
        for host in ("b", "c"):
            start(host, "worker", "--concurrency", "32")
        cio.delay_next(0.05, count=None)  # keep batches in flight long enough to interrupt

        load = Load(app_url)
        with ThreadPoolExecutor(SENDERS) as senders:
            for sender in range(SENDERS):
                senders.submit(load.run, sender)
            try:
                # 1. kill -9 B's worker while deliveries are claimed.
                wait_until(lambda: load.count() >= 150 and _claims(conninfo), timeout=60)
                held_at_kill = _claims(conninfo)
                network.kill("b")
                # C finishes them or takes them over once B is noticed silent (heartbeats).
                wait_until(lambda: _taken_over(conninfo, held_at_kill), timeout=15, interval=0.1)

                # 2. C is the only live worker now, so every live claim is C's. Slow
                # Customer.io down so C's claims are mid-send, cut C off PostgreSQL, restart B,
                # and keep C cut until B has taken C's claims over.
                wait_until(lambda: load.count() >= 300, timeout=60)
                cio.clear_faults()
                cio.delay_next(3.0, count=None)
                wait_until(lambda: _claims(conninfo), timeout=30, interval=0.05)
                network.cut("c", "db")
                held_at_cut = _claims(conninfo)
                cio.clear_faults()
                cio.delay_next(0.05, count=None)
                start("b", "worker", "--concurrency", "32")
                wait_until(lambda: _taken_over(conninfo, held_at_cut), timeout=60, interval=0.2)
                network.restore("c", "db")
                # C's finish of what it sent before the cut arrives late and is fenced out.
                c_log = tmp_path / "host-c.log"
                wait_until(lambda: FENCED in c_log.read_text(errors="replace"), timeout=60)
                wait_until(lambda: load.count() >= 600, timeout=60)
            finally:
                load.stop.set()

        acknowledged = set(load.acknowledged)

        def delivered() -> bool:
            seen = {
                e["data"]["stripe_event_id"]
                for e in cio.events
                if e.get("name") == "payment_succeeded"
            }
            return acknowledged <= seen

        wait_until(delivered, timeout=120, interval=0.5)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            wait_until(
                lambda: (
                    conn.execute(
                        "SELECT count(*) FROM deliveries WHERE status IN ('pending', 'retrying')"
                    ).fetchone()
                    == (0,)
                ),
                timeout=120,
                interval=0.5,
            )
            statuses: dict[str, int] = dict(
                conn.execute("SELECT status, count(*) FROM deliveries GROUP BY status").fetchall()
            )
        store.close()

        # Each Customer.io event is stored once under its deterministic id.
        per_event = Counter(
            e["data"]["stripe_event_id"] for e in cio.events if e.get("name") == "payment_succeeded"
        )
        assert all(per_event[event_id] == 1 for event_id in acknowledged)
        # Re-sends only for deliveries claimed by the killed or the cut-off worker.
        resent = cio.app.workspace.duplicate_events
        may_resend = len(held_at_kill) + len(held_at_cut)
        assert resent <= may_resend, (resent, may_resend)
        assert statuses.keys() <= {"succeeded"}, statuses
        for log in logs.values():
            log.close()
        fenced = c_log.read_text(errors="replace").count(FENCED)
        print(
            f"\nseveral hosts: {len(acknowledged)} acknowledged, {load.refused} refused, "
            f"{sum(per_event.values())} Customer.io events; held at kill {len(held_at_kill)}, "
            f"held at cut {len(held_at_cut)}, re-sent {resent}, late finishes fenced {fenced}"
        )
