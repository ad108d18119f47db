"""Reconcile: events only in Stripe's Events API (never sent as webhooks) arrive exactly once."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from billbridge.app import create_app
from billbridge.services import Services
from billbridge.store.records import FINAL_STATUSES
from billbridge.stripe.reconcile import CURSOR_KEY, OVERLAP, chunked, reconcile_types
from billbridge.stripe.samples import sample_event
from billbridge.stripe.signature import sign_payload
from tests.fakes import customerio as cio_fakes
from tests.fakes import stripe_api as stripe_fakes
from tests.fakes.customerio import FakeCustomerIO
from tests.fakes.stripe_api import FakeStripe
from tests.fakes.stripe_world import generate_world, load_world
from tests.support.live_server import serve_app, wait_until
from tests.support.stripe_jobs import SECRET, cio_track_events, invoke, use_env

fake_stripe = stripe_fakes.fake_stripe
fake_stripe_server = stripe_fakes.fake_stripe_server
fake_customerio = cio_fakes.fake_customerio
fake_customerio_server = cio_fakes.fake_customerio_server


def _all_final(services: Services, event_ids: list[str]) -> bool:
    for event_id in event_ids:
        detail = services.store.get_event(event_id)
        if detail is None or any(d.status not in FINAL_STATUSES for d in detail.deliveries):
            return False
    return True


def _post(url: str, event: dict[str, object]) -> None:
    body = json.dumps(event).encode()
    response = httpx.post(
        url + "/webhooks/stripe",
        content=body,
        headers={
            "Content-Type": "application/json",
            "Stripe-Signature": sign_payload(body, SECRET),
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text


def test_missed_events_arrive_exactly_once_and_a_second_run_recovers_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_stripe: FakeStripe,
    fake_customerio: FakeCustomerIO,
) -> None:
    """Half the world's events come as webhooks; `reconcile --since 30d` stores the other
    half, the worker delivers each event's Customer.io calls once, and a rerun adds none."""
    world = generate_world(15, seed=3)
    load_world(fake_stripe, world)
    settings = use_env(monkeypatch, tmp_path, fake_stripe, fake_customerio)
    app = create_app(settings, run_worker=True)
    triggers = set(reconcile_types_of_defaults())
    wanted = [e for e in world.events if e["type"] in triggers]
    sent, missed = wanted[::2], wanted[1::2]
    with serve_app(app) as url:
        services: Services = app.state.services
        for event in sent:
            _post(url, event)
        first = invoke("reconcile", "--since", "30d")
        assert first.exit_code == 0, first.output
        assert f"{len(wanted)} listed, {len(missed)} recovered" in first.output
        ids = [e["id"] for e in wanted]
        wait_until(lambda: _all_final(services, ids), timeout=60)
        second = invoke("reconcile", "--since", "30d")
        assert second.exit_code == 0, second.output
        assert f"{len(wanted)} listed, 0 recovered" in second.output
        for event in missed:
            detail = services.store.get_event(event["id"])
            assert detail is not None
            assert detail.summary.source == "reconcile"
    delivered = cio_track_events(fake_customerio)
    for event in wanted:
        names = [name for (event_id, name), _ in delivered.items() if event_id == event["id"]]
        assert names, f"{event['type']} {event['id']} never reached Customer.io"
        assert all(delivered[(event["id"], name)] == 1 for name in names)
    cursor = max(e["created"] for e in wanted)
    store_cursor = services.store.get_meta(CURSOR_KEY)
    assert store_cursor is None or int(store_cursor) == cursor  # closed store: may be None


def reconcile_types_of_defaults() -> list[str]:
    """The trigger types of the default workflows (what a fresh install reconciles)."""
    from billbridge.workflows.defaults import default_workflows  # noqa: PLC0415

    return sorted({t for w in default_workflows() if w.enabled for t in w.trigger.events})


def test_reconcile_lists_at_most_20_types_per_request_from_the_cursor_minus_overlap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_stripe: FakeStripe
) -> None:
    """Each Events API request names <= 20 types; a run without --since starts at the stored
    cursor minus the overlap window and moves the cursor to the newest event."""
    use_env(monkeypatch, tmp_path, fake_stripe)
    event = sample_event("charge.failed", created=1_900_000_000 - 10 * 86_400)
    fake_stripe.add_event(event)
    assert invoke("reconcile", "--since", "29d").exit_code == 0
    fake_stripe.clear_requests()
    result = invoke("reconcile")
    assert result.exit_code == 0, result.output
    assert "0 recovered" in result.output
    requests = fake_stripe.requests_to("/v1/events")
    assert requests
    for request in requests:
        types = [v for k, v in request.query if k.startswith("types[")]
        assert 1 <= len(types) <= 20
        gt = dict(request.query)["created[gt]"]
        assert int(gt) == max(event["created"] - OVERLAP, int(gt))
    assert chunked([str(n) for n in range(45)]) == [
        [str(n) for n in range(20)],
        [str(n) for n in range(20, 40)],
        [str(n) for n in range(40, 45)],
    ]


def test_reconcile_waits_out_stripe_429s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_stripe: FakeStripe
) -> None:
    """Two 429 answers from the Events API are retried with backoff; the run succeeds."""
    use_env(monkeypatch, tmp_path, fake_stripe)
    fake_stripe.add_event(sample_event("invoice.paid"))
    fake_stripe.fail_next(429, count=2, path_prefix="/v1/events")
    result = invoke("reconcile", "--since", "1h")
    assert result.exit_code == 0, result.output
    assert "1 listed, 1 recovered" in result.output
    assert len(fake_stripe.requests_to("/v1/events")) == 3


def test_periodic_reconcile_in_serve_picks_up_a_missed_event(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_stripe: FakeStripe,
    fake_customerio: FakeCustomerIO,
) -> None:
    """With a short BILLBRIDGE_RECONCILE_INTERVAL, an event only in the Events API is
    stored, delivered and counted in billbridge_reconcile_recovered_events_total."""
    settings = use_env(
        monkeypatch,
        tmp_path,
        fake_stripe,
        fake_customerio,
        BILLBRIDGE_RECONCILE_INTERVAL="0.3",
        BILLBRIDGE_API_TOKEN="test-token-for-api",
    )
    fake_stripe.add_customer("cus_periodic", email="periodic@example.com")
    app = create_app(settings, run_worker=True)
    with serve_app(app) as url:
        services: Services = app.state.services
        event = sample_event("charge.failed", customer_id="cus_periodic")
        fake_stripe.add_event(event)
        wait_until(lambda: _all_final(services, [event["id"]]), timeout=30)
        metrics = httpx.get(url + "/metrics", timeout=10).text
    assert "billbridge_reconcile_recovered_events_total 1.0" in metrics
    delivered = cio_track_events(fake_customerio)
    assert delivered[(event["id"], "payment_failed")] == 1
    assert reconcile_types(services.catalog)  # the catalog the task used is the app's


def test_reconcile_skips_an_event_out_of_the_ingest_bounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_stripe: FakeStripe
) -> None:
    """An Events API event a webhook would be refused for (an integer past 64 bits) is not
    stored; the others are."""
    use_env(monkeypatch, tmp_path, fake_stripe)
    good = sample_event("charge.failed", created=1_900_000_000 - 86_400)
    bad = sample_event("charge.failed", created=1_900_000_000 - 86_400)
    bad["data"]["object"]["amount"] = 2**64 - 1
    fake_stripe.add_event(good)
    fake_stripe.add_event(bad)
    result = invoke("reconcile", "--since", "29d")
    assert result.exit_code == 0, result.output
    assert "1 recovered" in result.output
