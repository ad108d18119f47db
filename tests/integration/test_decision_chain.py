"""The delivery decision only reads; what it learns is written with the batch's outcome."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from billbridge.billing.projection import rows_for_object
from billbridge.composition import build_services
from billbridge.config import Settings, load_settings
from billbridge.customerio.client import CustomerIOClient
from billbridge.delivery.decision import DecisionChain, Planned
from billbridge.delivery.executor import DeliveryExecutor
from billbridge.delivery.retry import RetryPolicy
from billbridge.identity import IdentityResolver, Person
from billbridge.observability import Metrics
from billbridge.store.base import Store
from billbridge.store.outbox import FENCED_OUT
from billbridge.store.pending import PendingReads
from billbridge.store.records import AttemptRecord, Completion, CustomerRecord, NewDelivery
from billbridge.store.records_billing import BillingRow, DiscoveredFacts
from billbridge.store.sql import SqlStore
from billbridge.store.tables import metadata
from billbridge.stripe.api import StripeAPI
from billbridge.stripe.events import new_event_from
from billbridge.stripe.samples import sample_event
from billbridge.web.preview import preview_sync
from billbridge.workflows.catalog import WorkflowCatalog
from billbridge.workflows.model import Workflow, validate_workflow
from tests.fakes import stripe_api as stripe_fakes
from tests.fakes.stripe_api import FakeStripe
from tests.fakes.stripe_expand import rendered

fake_stripe = stripe_fakes.fake_stripe
fake_stripe_server = stripe_fakes.fake_stripe_server

CUSTOMER = "cus_ChainTest01"
EMAIL = "chain@example.com"
CHARGE = "ch_ChainTest01"


def _dump(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order."""
    assert isinstance(store, SqlStore)
    with store._engine.connect() as conn:
        return {
            table.name: sorted((tuple(row) for row in conn.execute(sa.select(table))), key=repr)
            for table in metadata.sorted_tables
        }


def _settings(fake: FakeStripe, **extra: object) -> Settings:
    values: dict[str, object] = {
        "DATABASE_URL": "sqlite://",
        "STRIPE_API_KEY": fake.api_key,
        "STRIPE_API_BASE": fake.base_url,
    }
    values.update(extra)
    return load_settings(**values)


@pytest.fixture
def api(fake_stripe: FakeStripe) -> Iterator[StripeAPI]:
    """A Stripe client of the fake (no SDK retries)."""
    client = StripeAPI(_settings(fake_stripe), max_network_retries=0)
    yield client
    client.close()


def _profile_workflow(events: list[str]) -> Workflow:
    return validate_workflow(
        {
            "id": "profile",
            "name": "Profile",
            "trigger": {"events": events},
            "actions": [{"type": "identify", "include_profile": True}],
        }
    )


def _world(fake: FakeStripe) -> tuple[dict[str, Any], dict[str, Any]]:
    """Stripe knows the customer (not in our table), a subscription with a 50 % forever
    coupon (the webhook carries its discount as an id) and a disputed charge; returns a
    subscription update and a dispute webhook that names no customer."""
    fake.add_customer(CUSTOMER, email=EMAIL, name="Chain Test")
    fake.add_charge(CHARGE, customer=CUSTOMER, email=EMAIL, disputed=True)
    event = sample_event("customer.subscription.updated", customer_id=CUSTOMER)
    subscription = copy.deepcopy(event["data"]["object"])
    subscription["discounts"] = [
        {
            "id": "di_ChainTest01",
            "object": "discount",
            "customer": CUSTOMER,
            "end": None,
            "start": subscription["created"],
            "subscription": subscription["id"],
            "promotion_code": None,
            "source": {
                "type": "coupon",
                "coupon": {
                    "id": "co_Half",
                    "object": "coupon",
                    "amount_off": None,
                    "currency": None,
                    "duration": "forever",
                    "duration_in_months": None,
                    "livemode": False,
                    "percent_off": 50,
                    "valid": True,
                },
            },
        }
    ]
    fake.add_subscription(subscription)
    event["data"]["object"] = rendered(subscription)  # as a webhook: the discount an id
    dispute = sample_event("charge.dispute.created")
    dispute["data"]["object"]["charge"] = CHARGE
    dispute["data"]["object"].pop("customer", None)
    return event, dispute


def test_a_decision_batch_writes_nothing_and_hands_back_what_it_learnt(
    store: Store, fake_stripe: FakeStripe, api: StripeAPI
) -> None:
    """Deciding through the Stripe API (a customer, an object completed for MRR, a
    dispute's customer found through its charge) leaves every table as it was; the
    profile already counts what was learnt, and written, the facts give that profile."""
    updated, dispute = _world(fake_stripe)
    settings = _settings(fake_stripe)
    chain = DecisionChain(settings, store, IdentityResolver(settings, store, api))
    workflow = _profile_workflow([updated["type"], dispute["type"]])
    before = _dump(store)

    batch = chain.batch()
    decided = []
    for event in (updated, dispute):
        person = batch.person(event)
        assert isinstance(person, Person)
        assert person.customer_id == CUSTOMER
        decided.append(batch.action(workflow, 0, event, person, created=event["created"], now=0))
    assert _dump(store) == before
    facts = batch.facts()
    assert [c.stripe_customer_id for c in facts.customers] == [CUSTOMER]
    assert {(row.kind, row.customer_id) for row in facts.billing} == {
        ("subscription", CUSTOMER),
        ("dispute", CUSTOMER),
    }
    last = decided[-1]
    assert isinstance(last, Planned)
    sent = last.request.body or {}
    assert sent["email"] == EMAIL
    assert sent["disputes_count"] == 1
    assert sent["mrr"] == 1450  # 2900 with the 50 % coupon the API read completed

    store.record_facts(facts)
    written = chain.batch().profile(CUSTOMER)
    assert batch.profile(CUSTOMER) == written
    assert written["mrr"] == 1450
    assert written["disputes_count"] == 1
    record = store.get_customer(CUSTOMER)
    assert record is not None
    assert record.email == EMAIL


def test_pending_reads_read_as_the_store_does_once_the_facts_are_written(store: Store) -> None:
    """Rows applied in memory (new, older, newer, a customer link, sticky flags, a deleted
    customer's stub) read exactly as the same rows written by `record_facts`."""
    watermark = 1_000

    def row(obj: dict[str, Any], at: int, **overrides: Any) -> BillingRow:
        (only,) = rows_for_object(obj, watermark=at)
        return BillingRow(**{**vars(only), **overrides})

    charge = {
        "id": CHARGE,
        "object": "charge",
        "customer": CUSTOMER,
        "amount": 500,
        "currency": "usd",
        "status": "succeeded",
        "paid": True,
        "amount_refunded": 0,
    }
    dispute = {
        "id": "dp_1",
        "object": "dispute",
        "charge": "ch_other",
        "amount": 500,
        "currency": "usd",
        "status": "needs_response",
    }
    subscription = sample_event("customer.subscription.created", customer_id=CUSTOMER)["data"][
        "object"
    ]
    customer = {"id": CUSTOMER, "object": "customer", "email": EMAIL, "currency": "usd"}
    store.apply_billing(
        [
            row(charge, watermark),
            row(dispute, watermark),
            row(subscription, watermark),
            row(customer, watermark),
        ]
    )
    store.upsert_customer(CustomerRecord(CUSTOMER, EMAIL, "Old", 1, watermark=watermark))
    learnt = [
        row(dispute, watermark - 1, customer_id=CUSTOMER),  # older: only links the customer
        row({**subscription, "status": "past_due"}, watermark + 1, created=None),  # newer
        row({**charge, "id": "ch_new", "amount": 700}, watermark),  # new
        row(
            {"id": "in_1", "object": "invoice", "customer": CUSTOMER, "status": "open"},
            watermark,
            sticky=("payment_failed",),
        ),
        row({"id": CUSTOMER, "object": "customer", "deleted": True}, watermark + 2),  # stub
    ]
    reads = PendingReads(store)
    reads.add_rows(learnt)
    reads.add_customer(CustomerRecord(CUSTOMER, "new@example.com", "New", 1, watermark=5))
    reads.add_customer(CustomerRecord(CUSTOMER, "newer@example.com", "N", 1, watermark=watermark))
    pending_state = reads.billing_state(CUSTOMER)
    pending_objects = {
        (row.kind, row.stripe_id): reads.get_billing_object(row.kind, row.stripe_id)
        for row in learnt
    }
    pending_customer = reads.get_customer(CUSTOMER)

    store.record_facts(reads.facts())
    assert pending_state == store.billing_state(CUSTOMER)
    assert len(pending_state.disputes) == 1
    assert pending_state.customer is not None
    assert pending_state.customer["deleted"] is True
    for (kind, stripe_id), obj in pending_objects.items():
        assert obj == store.get_billing_object(kind, stripe_id), (kind, stripe_id)
    assert pending_customer == store.get_customer(CUSTOMER)
    assert pending_customer is not None
    assert pending_customer.email == "newer@example.com"


def _attempt() -> AttemptRecord:
    return AttemptRecord(outcome="skipped", started_at=time.time(), duration_ms=1, request=None)


def test_facts_and_the_outcome_commit_or_roll_back_together(store: Store) -> None:
    """`finish_many` writes the facts in the outcome's transaction: when recording fails
    (an attempt for a delivery that does not exist), the facts are not written either;
    with the outcome recorded, they are."""
    facts = DiscoveredFacts(customers=(CustomerRecord(CUSTOMER, EMAIL, None, 1, watermark=1),))
    with pytest.raises(Exception):  # noqa: B017, PT011 - the driver's integrity error
        store.finish_many([Completion(987_654, "gone", "skipped", _attempt())], facts)
    assert store.get_customer(CUSTOMER) is None
    event = sample_event("charge.succeeded")
    store.ingest(new_event_from(event, json.dumps(event)), [NewDelivery("wf", 0, "identify")])
    (claim,) = store.claim_due("w", 1, 60.0)
    assert store.finish_many(
        [Completion(claim.delivery_id, claim.claim_id, "skipped", _attempt())], facts
    ) == [True]
    assert store.get_customer(CUSTOMER) is not None


@pytest.fixture
def executor_parts(
    store: Store, fake_stripe: FakeStripe, api: StripeAPI
) -> Iterator[tuple[DeliveryExecutor, Workflow]]:
    """A DeliveryExecutor over `store` whose identity resolution reads the fake Stripe."""
    settings = _settings(fake_stripe)
    workflow = _profile_workflow(["customer.subscription.updated", "charge.dispute.created"])
    store.save_workflow(workflow.id, workflow.name, True, workflow.model_dump(mode="json"))
    cio = CustomerIOClient(settings)
    executor = DeliveryExecutor(
        settings=settings,
        store=store,
        catalog=WorkflowCatalog(store),
        resolver=IdentityResolver(settings, store, api),
        cio=cio,
        policy=RetryPolicy.from_settings(settings),
        metrics=Metrics(),
    )
    yield executor, workflow
    asyncio.run(cio.aclose())


@pytest.mark.parametrize("fenced", [False, True], ids=["owned", "fenced-out"])
def test_what_a_batch_learnt_is_written_with_its_outcome_even_when_fenced_out(
    store: Store,
    fake_stripe: FakeStripe,
    executor_parts: tuple[DeliveryExecutor, Workflow],
    fenced: bool,
) -> None:
    """A batch whose person came from the Stripe API: the customers row and the
    projection rows it learnt are written by the finish, and still written when another
    worker took the deliveries over meanwhile (facts are true whoever owns the delivery;
    the outcome itself is refused)."""
    executor, workflow = executor_parts
    updated, dispute = _world(fake_stripe)
    for event in (updated, dispute):
        delivery = NewDelivery(workflow.id, 0, "identify")
        store.ingest(new_event_from(event, json.dumps(event), "webhook"), [delivery])
    claims = store.claim_due("w-old", 10, 0.0 if fenced else 60.0)
    assert len(claims) == 2
    if fenced:
        assert len(store.claim_due("w-new", 10, 60.0)) == 2  # the lease ran out: taken over
    assert store.get_customer(CUSTOMER) is None
    done = asyncio.run(executor.run_many(claims))
    assert [c.status for c in done] == ["dry_run", "dry_run"]
    record = store.get_customer(CUSTOMER)
    assert record is not None
    assert record.email == EMAIL
    state = store.billing_state(CUSTOMER)
    assert [d["id"] for d in state.disputes] == [dispute["data"]["object"]["id"]]
    assert state.subscriptions[0]["discounts"]  # completed from the API
    detail = store.get_event(updated["id"])
    assert detail is not None
    (delivery,) = detail.deliveries
    if fenced:
        assert delivery.status == "pending"
        assert FENCED_OUT in (delivery.attempts[0].error or "")
    else:
        assert delivery.status == "dry_run"


def test_try_it_leaves_every_table_unchanged(tmp_path: Any, fake_stripe: FakeStripe) -> None:
    """The "Try it" preview of a workflow goes through the same chain (the person read
    from Stripe, the subscription completed for MRR, the dispute linked) and writes
    nothing: every table is as before."""
    updated, dispute = _world(fake_stripe)
    settings = _settings(
        fake_stripe,
        DATABASE_URL=f"sqlite:///{tmp_path / 'tryit.db'}",
        BILLBRIDGE_VAR_DIR=str(tmp_path / "var"),
    )
    services = build_services(settings)
    try:
        workflow = _profile_workflow([updated["type"], dispute["type"]])
        before = _dump(services.store)
        previews = [preview_sync(services, workflow, event) for event in (updated, dispute)]
        assert _dump(services.store) == before
        for preview in previews:
            assert preview.person is not None
            assert preview.person.customer_id == CUSTOMER
            (step,) = preview.steps
            assert step.status == "planned", step
        first = previews[0].steps[0].planned
        assert first is not None
        assert first.body["mrr"] == 1450
        assert fake_stripe.requests_to(f"/v1/customers/{CUSTOMER}")
    finally:
        asyncio.run(services.aclose())
