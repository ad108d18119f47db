"""Three `billbridge worker` processes on one database share Customer.io's App API rate:
200 transactional sends reach the fake Customer.io at most 10 in any second, never a 429."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from billbridge.config import Settings
from billbridge.ingest import IngestService
from billbridge.observability import Metrics
from billbridge.store import open_store
from billbridge.stripe.samples import sample_event
from billbridge.workflows.catalog import WorkflowCatalog
from tests.fakes.customerio import FakeCustomerIO
from tests.support.env import FLEET_SECRET_KEY, SETTINGS_ENV
from tests.support.live_server import BILLBRIDGE, wait_until

SENDS = 200
WORKERS = 3
LIMIT = 10  # App API requests per second: Customer.io's, the fake's and the default pace
MAIL_WORKFLOW = {
    "id": "fleet-mail",
    "name": "Welcome mail",
    "trigger": {"events": ["customer.created"]},
    "actions": [{"type": "send_email", "transactional_message_id": 7}],
}


def _ingest_sends(database_url: str) -> list[str]:
    """Only the mail workflow enabled, then SENDS customer.created events stored; their ids."""
    settings = Settings(DATABASE_URL=database_url, BILLBRIDGE_SECRET_KEY=FLEET_SECRET_KEY)
    store = open_store(database_url)
    try:
        store.migrate()
        catalog = WorkflowCatalog(store)
        catalog.ensure_defaults()
        for workflow in catalog.all():
            catalog.save({**workflow.model_dump(mode="json", by_alias=True), "enabled": False})
        catalog.save(MAIL_WORKFLOW)
        ingest = IngestService(
            settings=settings, store=store, catalog=catalog, metrics=Metrics(), secrets=()
        )
        ids = []
        for n in range(SENDS):
            event = sample_event("customer.created", customer_id=f"cus_Pace{n}", email=f"p{n}@x.io")
            ingest.store_event(event, json.dumps(event), "webhook")
            ids.append(str(event["id"]))
        return ids
    finally:
        store.close()


def _most_in_one_second(times: list[float]) -> int:
    """The largest number of `times` inside any window [t, t + 1 s)."""
    ordered = sorted(times)
    most, start = 0, 0
    for end, moment in enumerate(ordered):
        while moment - ordered[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


@pytest.mark.slow
@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_three_workers_stay_under_the_app_api_rate_together(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Three workers (10 deliveries in flight each) on one database send 200 transactional
    emails: the fake Customer.io, limiting the App API to 10 requests/s, never sees 11 in
    one second and never answers 429; every email is sent exactly once."""
    if database == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'fleet.db'}"
    else:
        database_url = str(request.getfixturevalue("own_postgres_url"))
    ids = _ingest_sends(database_url)
    with FakeCustomerIO() as cio:
        assert cio.config.app_rate_limit == LIMIT
        env = {
            **{k: v for k, v in os.environ.items() if k not in SETTINGS_ENV},
            **cio.settings_env(),
            "DATABASE_URL": database_url,
            "BILLBRIDGE_SECRET_KEY": FLEET_SECRET_KEY,
            "BILLBRIDGE_VAR_DIR": str(tmp_path / "var"),
        }
        workers = [
            subprocess.Popen(
                [BILLBRIDGE, "worker", "--concurrency", "10"],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=(tmp_path / f"worker{n}.log").open("wb"),
            )
            for n in range(WORKERS)
        ]
        try:
            wait_until(lambda: len(cio.sends) >= SENDS, timeout=120, interval=0.2)
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                worker.wait(timeout=30)
        app_calls: list[dict[str, Any]] = [r for r in cio.requests if r["api"] == "app"]
        statuses = [r["status"] for r in app_calls]
        assert 429 not in statuses
        assert len(app_calls) == SENDS
        assert _most_in_one_second([r["time"] for r in app_calls]) <= LIMIT
        sent_to = sorted(send["body"]["to"] for send in cio.sends)
        assert sent_to == sorted(f"p{n}@x.io" for n in range(SENDS))
    assert all(worker.returncode == 0 for worker in workers), [w.returncode for w in workers]
    assert len(ids) == SENDS
