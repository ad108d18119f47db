"""kill -9 of a `billbridge worker` holding claims: another worker takes them over within
15 s (heartbeats), long before their lease ends (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from billbridge.store import open_store
from billbridge.stripe.samples import sample_event
from tests.fakes.customerio import FakeCustomerIO
from tests.support.env import FLEET_SECRET_KEY
from tests.support.live_server import BILLBRIDGE, ServeProcess, post_signed, wait_until

SECRET = "whsec_takeover_secret"
EVENTS = 12
TAKEOVER_BOUND = 15.0  # seconds from the kill to every held delivery finished elsewhere


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/takeover.db"
    return str(request.getfixturevalue("own_postgres_url"))


def _worker(env: dict[str, str], cwd: Path, name: str) -> subprocess.Popen[bytes]:
    log = (cwd / f"{name}.log").open("ab")
    return subprocess.Popen(
        [BILLBRIDGE, "worker"], env={**os.environ, **env}, cwd=cwd, stdout=log, stderr=log
    )


@pytest.mark.slow
def test_a_killed_workers_claims_are_taken_over_within_15_seconds(
    tmp_path: Path, database_url: str
) -> None:
    """Worker A claims every delivery (Customer.io answers slowly, so they stay in flight
    under a 10-minute lease) and is killed with SIGKILL; worker B, already running, finishes
    all of them within 15 s of the kill."""
    with FakeCustomerIO() as cio:
        env = {
            **cio.settings_env(),
            "DATABASE_URL": database_url,
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "BILLBRIDGE_LEASE_SECONDS": "600",
            "CUSTOMERIO_TIMEOUT": "120",  # A's calls stay in flight until the kill
            "BILLBRIDGE_SECRET_KEY": FLEET_SECRET_KEY,
        }
        server = ServeProcess(env, cwd=tmp_path, args=("--no-worker",)).start()
        cio.delay_next(90.0, count=None)  # A's calls hang until it is killed
        first = _worker(env, tmp_path, "worker-a")
        second: subprocess.Popen[bytes] | None = None
        store = open_store(database_url)
        engine = sa.create_engine(database_url)
        try:
            ids = []
            for index in range(EVENTS):
                event = sample_event(
                    "charge.succeeded", customer_id=f"cus_Take{index}", email=f"t{index}@x.io"
                )
                assert post_signed(server.url, event, SECRET).status_code == 200
                ids.append(event["id"])

            def held() -> int:
                with engine.connect() as conn:
                    return int(
                        conn.execute(
                            sa.text(
                                "SELECT count(*) FROM deliveries WHERE claim_id IS NOT NULL"
                                " AND status IN ('pending', 'retrying')"
                            )
                        ).scalar_one()
                    )

            total = sum(len(store.get_event(i).deliveries) for i in ids)  # type: ignore[union-attr]
            wait_until(lambda: held() == total, timeout=30, interval=0.1)
            second = _worker(env, tmp_path, "worker-b")
            wait_until(lambda: len(store.list_workers(30.0)) == 2, timeout=30, interval=0.1)
            assert held() == total  # B has nothing to claim while A is alive

            first.kill()
            first.wait(timeout=10)
            killed_at = time.monotonic()
            cio.clear_faults()

            def all_succeeded() -> bool:
                return all(
                    d.status == "succeeded"
                    for event_id in ids
                    for d in store.get_event(event_id).deliveries  # type: ignore[union-attr]
                )

            wait_until(all_succeeded, timeout=TAKEOVER_BOUND + 15, interval=0.1)
            took = time.monotonic() - killed_at
            assert took <= TAKEOVER_BOUND, f"takeover took {took:.1f} s"
            assert {e["data"]["stripe_event_id"] for e in cio.events} >= set(ids)
            assert [w.pid for w in store.list_workers(30.0)] == [second.pid]
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=30)
            store.close()
            engine.dispose()
            server.stop()
