"""Track v2 batching: deliveries that are ready together share one `POST /api/v2/batch`,
and each keeps its own outcome (success, refusal, retry) exactly as if sent alone."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from billbridge.store import open_store
from billbridge.store.base import Store
from billbridge.store.records import FINAL_STATUSES, EventDetail
from billbridge.stripe.samples import sample_event
from billbridge.stripe.signature import sign_payload
from tests.fakes.customerio import FakeCustomerIO
from tests.support.auth import API_TOKEN_ENV
from tests.support.live_server import BILLBRIDGE, ServeProcess, wait_until

SECRET = "whsec_batching_test"
EVENTS = 10


class Deployment:
    """`serve --no-worker` takes the webhooks; a `billbridge worker` started later finds
    every delivery due at once, so they are claimed (and batched) together."""

    def __init__(self, tmp_path: Path, cio: FakeCustomerIO) -> None:
        self.database_url = f"sqlite:///{tmp_path}/batching.db"
        self.env = {
            **cio.settings_env(),
            **API_TOKEN_ENV,
            "DATABASE_URL": self.database_url,
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "BILLBRIDGE_RETRY_SCHEDULE": "0.2",
            "BILLBRIDGE_TRACK_BATCHING": "auto",
            "BILLBRIDGE_VAR_DIR": str(tmp_path / "var"),
        }
        self.tmp_path = tmp_path
        self.server = ServeProcess(self.env, cwd=tmp_path, args=("--no-worker",)).start()
        self.worker: subprocess.Popen[bytes] | None = None
        self.store: Store = open_store(self.database_url)

    def post(self, event: dict[str, Any]) -> None:
        body = json.dumps(event).encode()
        response = httpx.post(
            self.server.url + "/webhooks/stripe",
            content=body,
            headers={
                "Content-Type": "application/json",
                "Stripe-Signature": sign_payload(body, SECRET),
            },
            timeout=10,
        )
        assert response.status_code == 200, response.text

    def start_worker(self) -> None:
        self.worker = subprocess.Popen(
            [BILLBRIDGE, "worker", "--concurrency", "64"],
            env={**os.environ, **self.env},
            cwd=self.tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait_final(self, stripe_event_id: str) -> EventDetail:
        def final() -> EventDetail | None:
            detail = self.store.get_event(stripe_event_id)
            assert detail is not None
            done = all(d.status in FINAL_STATUSES for d in detail.deliveries)
            return detail if done else None

        result: EventDetail = wait_until(final, timeout=30)
        return result

    def close(self) -> None:
        if self.worker is not None:
            self.worker.terminate()
            self.worker.wait(timeout=30)
        self.server.stop()
        self.store.close()


@pytest.fixture
def cio() -> Iterator[FakeCustomerIO]:
    with FakeCustomerIO() as fake:
        yield fake


@pytest.fixture
def deployment(tmp_path: Path, cio: FakeCustomerIO) -> Iterator[Deployment]:
    running = Deployment(tmp_path, cio)
    try:
        yield running
    finally:
        running.close()


def _charges(count: int, *, prefix: str = "cus_Batch") -> list[dict[str, Any]]:
    return [
        sample_event("charge.succeeded", customer_id=f"{prefix}{i:02d}", email=f"b{i}@example.com")
        for i in range(count)
    ]


def _batches(cio: FakeCustomerIO) -> list[dict[str, Any]]:
    return [r for r in cio.requests if r["path"] == "/api/v2/batch"]


@pytest.mark.slow
def test_ready_deliveries_share_one_batch_request(
    deployment: Deployment, cio: FakeCustomerIO
) -> None:
    """Twenty deliveries due together go out as one v2 batch; each person and event lands
    once, and each delivery's attempt names its own operation."""
    events = _charges(EVENTS)
    for event in events:
        deployment.post(event)
    deployment.start_worker()
    details = [deployment.wait_final(event["id"]) for event in events]
    assert all(d.status == "succeeded" for detail in details for d in detail.deliveries)
    batches = _batches(cio)
    operations = sum(len(r["body"]["batch"]) for r in batches)
    assert operations == sum(len(detail.deliveries) for detail in details)
    assert len(batches) < EVENTS  # far fewer HTTP calls than deliveries
    assert not [r for r in cio.requests if r["path"].startswith("/api/v1/")]
    sent = sorted(e["data"]["stripe_event_id"] for e in cio.events)
    assert sent == sorted(event["id"] for event in events)
    assert cio.person("cus_Batch03") is not None
    attempt = details[3].deliveries[0].attempts[0]
    assert attempt.request is not None
    assert attempt.request["path"] == "/api/v2/batch"
    assert attempt.request["operation"]["identifiers"] == {"id": "cus_Batch03"}


@pytest.mark.slow
def test_a_failed_batch_request_retries_every_delivery_in_it(
    deployment: Deployment, cio: FakeCustomerIO
) -> None:
    """A 503 to the batch request reschedules all its deliveries; the retry delivers each
    exactly once."""
    events = _charges(4, prefix="cus_Retry")
    for event in events:
        deployment.post(event)
    cio.fail_next(503, path_prefix="/api/v2/batch")
    deployment.start_worker()
    for event in events:
        detail = deployment.wait_final(event["id"])
        for delivery in detail.deliveries:
            assert delivery.status == "succeeded"
            assert next(a.response_status for a in delivery.attempts) == 503
    sent = sorted(e["data"]["stripe_event_id"] for e in cio.events)
    assert sent == sorted(event["id"] for event in events)


@pytest.mark.slow
def test_a_refused_batch_falls_back_to_one_call_per_delivery(
    deployment: Deployment, cio: FakeCustomerIO
) -> None:
    """A 400 to a whole batch never fails the deliveries in it: each is sent on its own."""
    events = _charges(3, prefix="cus_Fallback")
    for event in events:
        deployment.post(event)
    cio.fail_next(400, path_prefix="/api/v2/batch", body={"errors": [{"message": "bad"}]})
    deployment.start_worker()
    for event in events:
        detail = deployment.wait_final(event["id"])
        assert {d.status for d in detail.deliveries} == {"succeeded"}
        assert all(d.attempts[-1].request["path"].startswith("/api/v1/") for d in detail.deliveries)  # type: ignore[index]
    assert len(cio.events) == len(events)


@pytest.mark.slow
def test_one_oversized_operation_fails_alone(deployment: Deployment, cio: FakeCustomerIO) -> None:
    """An operation over Customer.io's 32 KB limit fails with the reason; the other
    deliveries of the same batch succeed."""
    workflow = {
        "id": "blob-attribute",
        "name": "Blob attribute",
        "trigger": {"events": ["charge.succeeded"]},
        "actions": [{"type": "identify", "attributes": {"note": "{{ object.metadata.note }}"}}],
    }
    response = httpx.post(
        deployment.server.url + "/api/workflows",
        json=workflow,
        headers={"Authorization": f"Bearer {API_TOKEN_ENV['BILLBRIDGE_API_TOKEN']}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    events = _charges(3, prefix="cus_Blob")
    events[1]["data"]["object"]["metadata"] = {"note": "x" * 40_000}
    for event in events:
        deployment.post(event)
    deployment.start_worker()
    big = deployment.wait_final(events[1]["id"])
    blob = next(d for d in big.deliveries if d.workflow_id == "blob-attribute")
    assert blob.status == "failed"
    assert "too_large" in (blob.last_error or "")
    others = [d for d in big.deliveries if d.workflow_id != "blob-attribute"]
    assert {d.status for d in others} == {"succeeded"}
    for event in (events[0], events[2]):
        assert {d.status for d in deployment.wait_final(event["id"]).deliveries} == {"succeeded"}
