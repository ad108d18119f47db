"""Identity resolution over a real store and the fake Stripe API on loopback (real HTTP)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from billbridge.config import Settings, load_settings
from billbridge.errors import StripeAPIError
from billbridge.identity import IdentityResolver, Person, Unresolved
from billbridge.store import open_store
from billbridge.store.base import Store
from billbridge.store.pending import PendingReads
from billbridge.store.records import CustomerRecord
from billbridge.stripe.api import StripeAPI
from billbridge.stripe.events import customer_record_from
from billbridge.stripe.samples import sample_event
from tests.fakes.stripe_api import FakeStripe

CUSTOMER = "cus_IdentityTest01"
EMAIL = "jane.doe@example.com"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """The real SQLite store, migrated, in a temporary directory."""
    real = open_store(f"sqlite:///{tmp_path}/t.db")
    real.migrate()
    yield real
    real.close()


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeStripe]:
    """One fake Stripe API for this module."""
    with FakeStripe() as running:
        yield running


@pytest.fixture
def fake(fake_server: FakeStripe) -> FakeStripe:
    """The module's fake Stripe API, emptied for this test."""
    fake_server.reset()
    return fake_server


@pytest.fixture
def make_api() -> Iterator[Callable[..., StripeAPI]]:
    """Build StripeAPI clients (no SDK retries unless asked) and close them afterwards."""
    opened: list[StripeAPI] = []

    def build(settings: Settings, **options: Any) -> StripeAPI:
        options.setdefault("max_network_retries", 0)
        api = StripeAPI(settings, **options)
        opened.append(api)
        return api

    yield build
    for api in opened:
        api.close()


def _settings(fake: FakeStripe | None = None, **extra: object) -> Settings:
    values: dict[str, object] = {"DATABASE_URL": "sqlite://"}
    if fake is not None:
        values.update(STRIPE_API_KEY=fake.api_key, STRIPE_API_BASE=fake.base_url)
    values.update(extra)
    return load_settings(**values)


def _resolver(
    store: Store,
    make_api: Callable[..., StripeAPI],
    fake: FakeStripe | None = None,
    **extra: object,
) -> tuple[IdentityResolver, StripeAPI | None]:
    settings = _settings(fake, **extra)
    api = make_api(settings) if fake is not None else None
    return IdentityResolver(settings, store, api), api


def _person(result: Person | Unresolved) -> Person:
    assert isinstance(result, Person), result
    return result


def _customer_requests(fake: FakeStripe, customer_id: str = CUSTOMER) -> int:
    return len(fake.requests_to(f"/v1/customers/{customer_id}"))


# Payload, table, API -------------------------------------------------------------------------


def test_email_from_the_payload_needs_no_lookup(
    store: Store, fake: FakeStripe, make_api: Callable[..., StripeAPI]
) -> None:
    """charge.succeeded carries the email: resolved without touching the table or the API."""
    resolver, _ = _resolver(store, make_api, fake)
    event = sample_event("charge.succeeded", customer_id=CUSTOMER, email=EMAIL)
    person = _person(resolver.resolve(event))
    assert (person.identifier, person.customer_id, person.email) == (CUSTOMER, CUSTOMER, EMAIL)
    assert fake.requests == []


def test_customer_event_uses_its_own_payload_as_customer(
    store: Store, make_api: Callable[..., StripeAPI]
) -> None:
    """customer.updated: the payload is the customer object for templates."""
    resolver, _ = _resolver(store, make_api)
    event = sample_event("customer.updated", customer_id=CUSTOMER, email=EMAIL)
    person = _person(resolver.resolve(event))
    assert person.email == EMAIL
    assert person.customer == event["data"]["object"]


def test_email_from_the_customers_table(store: Store, make_api: Callable[..., StripeAPI]) -> None:
    """A subscription event (no email) finds the email in the table fed by customer.*."""
    created = sample_event("customer.created", customer_id=CUSTOMER, email=EMAIL)
    record = customer_record_from(created)
    assert record is not None
    store.upsert_customer(record)
    resolver, _ = _resolver(store, make_api)
    person = _person(
        resolver.resolve(sample_event("customer.subscription.created", customer_id=CUSTOMER))
    )
    assert (person.identifier, person.email) == (CUSTOMER, EMAIL)
    assert person.customer["id"] == CUSTOMER
    assert person.customer["email"] == EMAIL
    assert person.customer["name"] == "Jane Doe"
    assert person.customer["metadata"] == {"account_id": "acct-4821"}


def test_deleted_customer_keeps_its_email_from_the_table(
    store: Store, fake: FakeStripe, make_api: Callable[..., StripeAPI]
) -> None:
    """After customer.deleted only the table knows the email; the API is not asked."""
    deleted = customer_record_from(
        sample_event("customer.deleted", customer_id=CUSTOMER, email=EMAIL)
    )
    assert deleted is not None
    store.upsert_customer(deleted)
    fake.add_customer(CUSTOMER, email=EMAIL)
    fake.delete_customer(CUSTOMER)
    resolver, _ = _resolver(store, make_api, fake)
    event = sample_event("customer.subscription.deleted", customer_id=CUSTOMER)
    person = _person(resolver.resolve(event))
    assert person.email == EMAIL
    assert fake.requests == []


def test_email_from_the_api_is_handed_back_written_later_and_cached(
    store: Store, fake: FakeStripe, make_api: Callable[..., StripeAPI]
) -> None:
    """Not in the table: GET /v1/customers/{id} once; resolving writes nothing but hands
    the record to `found` (and `known`); written, it fills the table; no second request."""
    fake.add_customer(CUSTOMER, email=EMAIL, name="Jane Doe", metadata={"uid": "u-42"})
    resolver, _ = _resolver(store, make_api, fake)
    found = PendingReads(store)
    known: dict[str, CustomerRecord | None] = {}
    first = _person(
        resolver.resolve(
            sample_event("customer.subscription.created", customer_id=CUSTOMER),
            known=known,
            found=found,
        )
    )
    assert (first.identifier, first.email) == (CUSTOMER, EMAIL)
    assert first.customer["object"] == "customer"
    assert first.customer["metadata"] == {"uid": "u-42"}
    assert _customer_requests(fake) == 1
    assert store.get_customer(CUSTOMER) is None  # resolution only reads
    (learnt,) = found.facts().customers
    assert known[CUSTOMER] == learnt == found.get_customer(CUSTOMER)
    store.record_facts(found.facts())
    saved = store.get_customer(CUSTOMER)
    assert saved is not None
    assert (saved.email, saved.name, saved.metadata) == (EMAIL, "Jane Doe", {"uid": "u-42"})
    assert saved.watermark > 0

    second = _person(
        resolver.resolve(sample_event("invoice.payment_failed", customer_id=CUSTOMER, email=EMAIL))
    )
    third = _person(
        resolver.resolve(sample_event("customer.subscription.updated", customer_id=CUSTOMER))
    )
    assert second.email == third.email == EMAIL
    assert _customer_requests(fake) == 1


def test_api_reads_are_cached_in_process(
    store: Store, fake: FakeStripe, make_api: Callable[..., StripeAPI]
) -> None:
    """A customer without email is asked once; the next resolves hit the in-process cache."""
    fake.add_customer(CUSTOMER, email=None)
    resolver, _ = _resolver(store, make_api, fake)
    for _ in range(3):
        person = _person(
            resolver.resolve(sample_event("customer.subscription.updated", customer_id=CUSTOMER))
        )
        assert (person.identifier, person.email) == (CUSTOMER, None)
    assert _customer_requests(fake) == 1


def test_cache_ttl_zero_means_no_cache(
    fake: FakeStripe, make_api: Callable[..., StripeAPI]
) -> None:
    """BILLBRIDGE_STRIPE_CACHE_SECONDS=0 reads Stripe every time."""
    fake.add_customer(CUSTOMER, email=EMAIL)
    api = make_api(_settings(fake, BILLBRIDGE_STRIPE_CACHE_SECONDS=0))
    api.get_customer(CUSTOMER)
    api.get_customer(CUSTOMER)
    assert _customer_requests(fake) == 2


def test_cache_expires_after_ttl(fake: FakeStripe, make_api: Callable[..., StripeAPI]) -> None:
    """An entry older than the TTL is read again (clock injected, no sleeping)."""
    fake.add_customer(CUSTOMER, email=EMAIL)
    now = [1000.0]
    api = make_api(_settings(fake, BILLBRIDGE_STRIPE_CACHE_SECONDS=60), clock=lambda: now[0])
    api.get_customer(CUSTOMER)
    now[0] += 59
    api.get_customer(CUSTOMER)
    assert _customer_requests(fake) == 1
    now[0] += 2
    api.get_customer(CUSTOMER)
    assert _customer_requests(fake) == 2


def test_cache_is_bounded(fake: FakeStripe, make_api: Callable[..., StripeAPI]) -> None:
    """The least recently used entry is dropped beyond cache_size."""
    for n in range(3):
        fake.add_customer(f"cus_{n}", email=f"u{n}@example.com")
    api = make_api(_settings(fake), max_network_retries=0, cache_size=2)
    for n in (0, 1, 2, 0):
        api.get_customer(f"cus_{n}")
    assert _customer_requests(fake, "cus_0") == 2


def test_deleted_stub_from_the_api_resolves_by_id(
    store: Store, fake: FakeStripe, make_api: Callable[..., StripeAPI]
) -> None:
    """The API's deleted stub has no email: the person is the customer id alone."""
    fake.add_customer(CUSTOMER, email=EMAIL)
    fake.delete_customer(CUSTOMER)
    resolver, api = _resolver(store, make_api, fake)
    assert api is not None
    assert api.get_customer(CUSTOMER) is None
    person = _person(
        resolver.resolve(sample_event("customer.subscription.deleted", customer_id=CUSTOMER))
    )
    assert (person.identifier, person.email, person.customer) == (CUSTOMER, None, {})


def test_unknown_customer_404_resolves_by_id(
    store: Store, fake: FakeStripe, make_api: Callable[..., StripeAPI]
) -> None:
    """A 404 (resource_missing) is not an error: resolve with the id alone."""
    resolver, _ = _resolver(store, make_api, fake)
    person = _person(
        resolver.resolve(sample_event("customer.subscription.created", customer_id="cus_missing"))
    )
    assert (person.identifier, person.email) == ("cus_missing", None)
    assert store.get_customer("cus_missing") is None


# Disputes and other objects without a customer --------------------------------------------


def test_dispute_resolves_through_its_charge(
    store: Store, fake: FakeStripe, make_api: Callable[..., StripeAPI]
) -> None:
    """charge.dispute.created: GET /v1/charges/{charge} gives the customer and the email."""
    event = sample_event("charge.dispute.created")
    charge_id = event["data"]["object"]["charge"]
    fake.add_charge(charge_id, customer=CUSTOMER, email=EMAIL)
    fake.add_customer(CUSTOMER, email=EMAIL)
    resolver, _ = _resolver(store, make_api, fake)
    person = _person(resolver.resolve(event))
    assert (person.identifier, person.customer_id, person.email) == (CUSTOMER, CUSTOMER, EMAIL)
    assert len(fake.requests_to(f"/v1/charges/{charge_id}")) == 1


def test_dispute_charge_without_email_falls_back_to_the_customer(
    store: Store, fake: FakeStripe, make_api: Callable[..., StripeAPI]
) -> None:
    """The charge names the customer but no email: the customer lookup supplies it."""
    event = sample_event("charge.dispute.created")
    charge_id = event["data"]["object"]["charge"]
    fake.add_charge(charge_id, customer=CUSTOMER, email=None, receipt_email=None)
    fake.add_customer(CUSTOMER, email=EMAIL)
    resolver, _ = _resolver(store, make_api, fake)
    person = _person(resolver.resolve(event))
    assert (person.customer_id, person.email) == (CUSTOMER, EMAIL)
    assert _customer_requests(fake) == 1


def test_guest_dispute_resolves_by_receipt_email(
    store: Store, fake: FakeStripe, make_api: Callable[..., StripeAPI]
) -> None:
    """A guest charge (no customer) still gives its receipt_email."""
    event = sample_event("charge.dispute.created")
    fake.add_charge(
        event["data"]["object"]["charge"], customer=None, receipt_email="guest@example.com"
    )
    resolver, _ = _resolver(store, make_api, fake)
    person = _person(resolver.resolve(event))
    assert (person.identifier, person.customer_id, person.email) == (
        "guest@example.com",
        None,
        "guest@example.com",
    )


def test_dispute_without_api_key_is_unresolved_with_a_hint(
    store: Store, make_api: Callable[..., StripeAPI]
) -> None:
    """Without STRIPE_API_KEY a dispute cannot be resolved; the reason says what to do."""
    resolver, _ = _resolver(store, make_api)
    result = resolver.resolve(sample_event("charge.dispute.created"))
    assert isinstance(result, Unresolved)
    assert result.reason.startswith("no Stripe customer and no email in the event")
    assert "STRIPE_API_KEY" in result.reason


def test_nothing_known_is_unresolved(
    store: Store, fake: FakeStripe, make_api: Callable[..., StripeAPI]
) -> None:
    """No customer and no email anywhere: Unresolved with the documented reason."""
    event = sample_event("checkout.session.completed")
    event["data"]["object"].update(customer=None, customer_details=None, customer_email=None)
    resolver, _ = _resolver(store, make_api, fake)
    assert resolver.resolve(event) == Unresolved("no Stripe customer and no email in the event")
    assert fake.requests == []


# Identifier modes -------------------------------------------------------------------------


def test_identifier_email_mode(store: Store, make_api: Callable[..., StripeAPI]) -> None:
    """BILLBRIDGE_IDENTIFIER=email uses the email, else falls back to the customer id."""
    resolver, _ = _resolver(store, make_api, BILLBRIDGE_IDENTIFIER="email")
    with_email = sample_event("invoice.paid", customer_id=CUSTOMER, email=EMAIL)
    assert _person(resolver.resolve(with_email)).identifier == EMAIL
    without = sample_event("customer.subscription.created", customer_id=CUSTOMER)
    assert _person(resolver.resolve(without)).identifier == CUSTOMER


def test_identifier_customer_id_mode_falls_back_to_email(
    store: Store, make_api: Callable[..., StripeAPI]
) -> None:
    """stripe_customer_id mode: a guest checkout (no customer) is identified by email."""
    resolver, _ = _resolver(store, make_api)
    event = sample_event("checkout.session.completed", email="guest@example.com")
    event["data"]["object"]["customer"] = None
    person = _person(resolver.resolve(event))
    assert (person.identifier, person.customer_id) == ("guest@example.com", None)


def test_identifier_metadata_mode_from_payload(
    store: Store, make_api: Callable[..., StripeAPI]
) -> None:
    """metadata:KEY reads the customer's metadata (payload of customer.* events)."""
    resolver, _ = _resolver(store, make_api, BILLBRIDGE_IDENTIFIER="metadata:account_id")
    person = _person(resolver.resolve(sample_event("customer.created", customer_id=CUSTOMER)))
    assert person.identifier == "acct-4821"


def test_identifier_metadata_mode_from_api(
    store: Store, fake: FakeStripe, make_api: Callable[..., StripeAPI]
) -> None:
    """metadata:KEY for a subscription event reads the metadata fetched from the API."""
    fake.add_customer(CUSTOMER, email=EMAIL, metadata={"user_id": "u-42"})
    resolver, _ = _resolver(store, make_api, fake, BILLBRIDGE_IDENTIFIER="metadata:user_id")
    event = sample_event("customer.subscription.created", customer_id=CUSTOMER)
    assert _person(resolver.resolve(event)).identifier == "u-42"
    # Later, from the table the API read filled.
    again = sample_event("invoice.paid", customer_id=CUSTOMER, email=EMAIL)
    assert _person(resolver.resolve(again)).identifier == "u-42"
    assert _customer_requests(fake) == 1


def test_identifier_metadata_mode_falls_back_to_customer_id(
    store: Store, make_api: Callable[..., StripeAPI]
) -> None:
    """A customer without that metadata key is identified by its customer id."""
    resolver, _ = _resolver(store, make_api, BILLBRIDGE_IDENTIFIER="metadata:missing_key")
    person = _person(resolver.resolve(sample_event("customer.created", customer_id=CUSTOMER)))
    assert person.identifier == CUSTOMER


# Failures, auth, Connect ------------------------------------------------------------------


def test_retryable_api_error_propagates(
    store: Store, fake: FakeStripe, make_api: Callable[..., StripeAPI]
) -> None:
    """A 429 from Stripe raises a retryable StripeAPIError: the delivery retries later."""
    fake.add_customer(CUSTOMER, email=EMAIL)
    fake.fail_next(429)
    resolver, _ = _resolver(store, make_api, fake)
    with pytest.raises(StripeAPIError) as caught:
        resolver.resolve(sample_event("customer.subscription.created", customer_id=CUSTOMER))
    assert caught.value.retryable is True
    assert caught.value.status_code == 429
    assert _customer_requests(fake) == 1  # the SDK does not retry a plain 429


def test_server_error_propagates_after_sdk_retries(
    store: Store, fake: FakeStripe, make_api: Callable[..., StripeAPI]
) -> None:
    """A persistent 500 is retried by the SDK, then raised as retryable."""
    fake.fail_next(500, count=2, headers={"Stripe-Should-Retry": "true"})
    settings = _settings(fake)
    api = make_api(settings, max_network_retries=1)
    resolver = IdentityResolver(settings, store, api)
    with pytest.raises(StripeAPIError) as caught:
        resolver.resolve(sample_event("customer.subscription.created", customer_id=CUSTOMER))
    assert caught.value.retryable is True
    assert _customer_requests(fake) == 2


def test_non_retryable_api_error_resolves_with_what_is_known(
    store: Store, fake: FakeStripe, make_api: Callable[..., StripeAPI]
) -> None:
    """A 403 (restricted key without access) does not block: resolve by customer id."""
    fake.fail_next(403)
    resolver, _ = _resolver(store, make_api, fake)
    person = _person(
        resolver.resolve(sample_event("customer.subscription.created", customer_id=CUSTOMER))
    )
    assert (person.identifier, person.email) == (CUSTOMER, None)


def test_sdk_sends_bearer_key_and_errors_never_contain_it(
    store: Store, fake: FakeStripe, make_api: Callable[..., StripeAPI]
) -> None:
    """Requests carry Authorization: Bearer; a refused key never appears in the error."""
    fake.add_customer(CUSTOMER, email=EMAIL)
    _, api = _resolver(store, make_api, fake)
    assert api is not None
    api.get_customer(CUSTOMER)
    assert fake.requests[0].headers["authorization"] == f"Bearer {fake.api_key}"
    assert fake.requests[0].headers["stripe-version"] == "2026-10-28.endive"

    wrong_key = "sk_test_WrongKeyAbcdefghijkl9876"
    bad = make_api(_settings(fake, STRIPE_API_KEY=wrong_key))
    with pytest.raises(StripeAPIError) as caught:
        bad.get_customer(CUSTOMER)
    message = str(caught.value)
    assert caught.value.status_code == 401
    assert caught.value.retryable is False
    assert "STRIPE_API_KEY" in message
    for fragment in (wrong_key, wrong_key[-4:], wrong_key[:12], fake.api_key):
        assert fragment not in message
    assert wrong_key not in repr(bad)


def test_connect_account_is_sent_as_stripe_account(
    store: Store, fake: FakeStripe, make_api: Callable[..., StripeAPI]
) -> None:
    """An event from a connected account reads Stripe with the Stripe-Account header."""
    fake.add_customer(CUSTOMER, email=EMAIL)
    resolver, _ = _resolver(store, make_api, fake)
    event = sample_event("customer.subscription.created", customer_id=CUSTOMER)
    event["account"] = "acct_1Connected"
    _person(resolver.resolve(event))
    assert fake.requests_to(f"/v1/customers/{CUSTOMER}")[0].headers["stripe-account"] == (
        "acct_1Connected"
    )


def test_check_describes_the_connection(
    fake: FakeStripe, make_api: Callable[..., StripeAPI]
) -> None:
    """check() does one GET /v1/balance and names the mode, never the key."""
    api = make_api(_settings(fake))
    description = api.check()
    assert "test mode" in description
    assert fake.api_key not in description
    assert len(fake.requests_to("/v1/balance")) == 1


def test_connection_refused_is_retryable(store: Store, make_api: Callable[..., StripeAPI]) -> None:
    """An unreachable STRIPE_API_BASE is a retryable error."""
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = load_settings(STRIPE_API_KEY="sk_test_x", STRIPE_API_BASE=base)
    api = make_api(settings)
    with pytest.raises(StripeAPIError) as caught:
        api.get_customer(CUSTOMER)
    assert caught.value.retryable is True
    assert caught.value.status_code is None
