"""`billbridge backfill`: every Stripe customer's billing profile into Customer.io, batched."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from billbridge.backfill import CHECKPOINT_KEY
from billbridge.billing.profile import REMOVABLE_ATTRIBUTES, compute_profile
from billbridge.store import open_store
from billbridge.store.base import Store
from tests.fakes import customerio as cio_fakes
from tests.fakes import stripe_api as stripe_fakes
from tests.fakes.customerio import FakeCustomerIO
from tests.fakes.stripe_api import FakeStripe
from tests.fakes.stripe_world import World, generate_world, load_world
from tests.support.stripe_jobs import invoke, use_env

fake_stripe = stripe_fakes.fake_stripe
fake_stripe_server = stripe_fakes.fake_stripe_server
fake_customerio = cio_fakes.fake_customerio
fake_customerio_server = cio_fakes.fake_customerio_server

WORLD_SIZE = 200


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(WORLD_SIZE, seed=11)


@pytest.fixture
def loaded(
    world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_stripe: FakeStripe,
    fake_customerio: FakeCustomerIO,
) -> World:
    load_world(fake_stripe, world, events=False)
    use_env(monkeypatch, tmp_path, fake_stripe, fake_customerio)
    return world


@pytest.fixture
def job_store(tmp_path: Path, loaded: World) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        yield opened
    finally:
        opened.close()


def _batches(cio: FakeCustomerIO) -> list[list[dict[str, Any]]]:
    return [
        r["body"]["batch"]
        for r in cio.requests
        if r["path"] == "/api/v2/batch" and r["status"] == 200
    ]


def _check_people(world: World, cio: FakeCustomerIO, store: Store, ids: list[str]) -> None:
    people = cio.people
    for customer_id in ids:
        person = people.get(customer_id)
        assert person is not None, f"{customer_id} is not in Customer.io"
        profile = {k: v for k, v in compute_profile(store, customer_id).items() if v is not None}
        for key, value in profile.items():
            assert person.get(key) == value, (customer_id, key, person.get(key), value)
        for key, value in world.expected(customer_id).items():
            assert person.get(key) == value, (customer_id, key, person.get(key), value)


def test_every_customer_arrives_with_its_profile_in_few_requests_despite_429s(
    loaded: World, fake_stripe: FakeStripe, fake_customerio: FakeCustomerIO, job_store: Store
) -> None:
    """200 customers: each person carries compute_profile's attributes and the world's own
    subscription_status / mrr / total_spent; Customer.io gets a handful of batch requests;
    Stripe 429s are waited out."""
    fake_stripe.fail_next(429, count=3, path_prefix="/v1/charges")
    result = invoke("backfill")
    assert result.exit_code == 0, result.output
    assert (
        f"{WORLD_SIZE} customers, {WORLD_SIZE} accepted by Customer.io, 0 errors" in result.output
    )
    assert "(3 rate limited and retried)" in result.output
    ids = [c["id"] for c in loaded.customers]
    _check_people(loaded, fake_customerio, job_store, ids)
    batches = _batches(fake_customerio)
    assert 1 <= len(batches) <= WORLD_SIZE // 50
    assert sorted(op["identifiers"]["id"] for batch in batches for op in batch) == sorted(ids)
    stripe_requests = len(fake_stripe.requests)
    assert stripe_requests < 40  # account-wide lists, 100 per page, not 3-5 per customer
    assert f"{stripe_requests} Stripe requests" in result.output
    checkpoint = json.loads(job_store.get_meta(CHECKPOINT_KEY) or "{}")
    assert checkpoint["complete"] is True


def test_a_stopped_backfill_resumes_after_the_checkpoint_without_resending(
    loaded: World, fake_customerio: FakeCustomerIO, job_store: Store
) -> None:
    """--limit 60 (a crash after 60 customers, batches of 25), then --resume: every customer
    is sent exactly once over both runs, the second run starting after the checkpoint."""
    first = invoke("backfill", "--limit", "60", "--batch-size", "25")
    assert first.exit_code == 0, first.output
    assert "backfill --resume" in first.output
    first_batches = _batches(fake_customerio)
    assert [len(batch) for batch in first_batches] == [25, 25, 10]
    checkpoint = json.loads(job_store.get_meta(CHECKPOINT_KEY) or "{}")
    assert checkpoint["last_customer"] == first_batches[-1][-1]["identifiers"]["id"]
    second = invoke("backfill", "--resume", "--batch-size", "25")
    assert second.exit_code == 0, second.output
    assert f"Resumed after customer {checkpoint['last_customer']}" in second.output
    sent = Counter(op["identifiers"]["id"] for b in _batches(fake_customerio) for op in b)
    assert set(sent) == {c["id"] for c in loaded.customers}
    assert set(sent.values()) == {1}
    third = invoke("backfill", "--resume")
    assert third.exit_code == 0, third.output
    assert "0 customers" in third.output
    assert len(_batches(fake_customerio)) == len(first_batches) + 6


def test_a_small_limit_lists_per_customer_and_gets_the_same_profiles(
    loaded: World, fake_stripe: FakeStripe, fake_customerio: FakeCustomerIO, job_store: Store
) -> None:
    """--limit 5 uses per-customer lists (no account-wide listing) with the same result."""
    result = invoke("backfill", "--limit", "5")
    assert result.exit_code == 0, result.output
    assert "strategy customer" in result.output
    assert not fake_stripe.requests_to("/v1/invoices") or all(
        dict(r.query).get("customer") for r in fake_stripe.requests_to("/v1/invoices")
    )
    (batch,) = _batches(fake_customerio)
    ids = [op["identifiers"]["id"] for op in batch]
    newest_first = sorted(loaded.customers, key=lambda c: c["created"], reverse=True)
    assert ids == [c["id"] for c in newest_first[:5]]
    _check_people(loaded, fake_customerio, job_store, ids)


def test_dry_run_sends_nothing_and_prints_a_sample_operation(
    loaded: World,
    fake_customerio: FakeCustomerIO,
    job_store: Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--dry-run computes every profile, sends no request, saves no checkpoint, and shows
    one identify operation (identified by email under BILLBRIDGE_IDENTIFIER=email)."""
    monkeypatch.setenv("BILLBRIDGE_IDENTIFIER", "email")
    result = invoke("backfill", "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"dry run, nothing sent, strategy account): {WORLD_SIZE} customers" in result.output
    assert fake_customerio.requests == []
    assert job_store.get_meta(CHECKPOINT_KEY) is None
    sample = json.loads(result.output.split("Sample operation (POST /api/v2/batch):\n", 1)[1])
    assert sample["action"] == "identify"
    assert sample["identifiers"]["email"].endswith("@example.com")
    assert sample["attributes"]["stripe_customer_id"].startswith("cus_")
    # Every billing attribute is there: a value, or "" where the profile has none.
    assert set(REMOVABLE_ATTRIBUTES) <= set(sample["attributes"])


def test_a_backfill_removes_stale_billing_attributes_and_keeps_the_rest(
    loaded: World, fake_customerio: FakeCustomerIO, job_store: Store
) -> None:
    """A person already in Customer.io with billing attributes that are no longer true (and
    one of the product's own): the backfill removes the stale ones, keeps the other."""
    customer_id = max(loaded.customers, key=lambda c: c["created"])["id"]
    config = fake_customerio.config
    stale = {"trial_end": 1, "mrr_by_currency": {"usd": 1, "eur": 2}, "canceled_at": 2}
    seeded = httpx.put(
        f"{fake_customerio.url}/api/v1/customers/{customer_id}",
        json={**stale, "favourite_colour": "green"},
        auth=(config.site_id, config.track_api_key),
        timeout=10,
    )
    assert seeded.status_code == 200, seeded.text
    result = invoke("backfill", "--limit", "1")
    assert result.exit_code == 0, result.output
    person = fake_customerio.person(customer_id)
    assert person is not None
    profile = compute_profile(job_store, customer_id)
    for name in stale:
        assert person.get(name) == profile.get(name), name  # the true value, or removed
    assert {name for name in REMOVABLE_ATTRIBUTES if name in person} == {
        name for name in REMOVABLE_ATTRIBUTES if name in profile
    }
    assert person["favourite_colour"] == "green"
