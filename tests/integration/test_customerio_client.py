"""CustomerIOClient over real loopback HTTP against the fake Customer.io, and the fake's rules."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from billbridge import __version__
from billbridge.config import Settings
from billbridge.customerio import (
    CioRequest,
    CioResponse,
    CustomerIOClient,
    error_detail,
    parse_retry_after,
    path_identifier,
    plan_batches,
    safe_path,
)
from billbridge.customerio import client as client_module
from billbridge.errors import (
    AmbiguousSendError,
    DeliveryError,
    RetryableDeliveryError,
    TerminalDeliveryError,
)
from tests.fakes import customerio as fakes
from tests.fakes.customerio import (
    APP_API_KEY,
    SITE_ID,
    TRACK_API_KEY,
    FakeCustomerIO,
    FakeCustomerIOProcess,
)

# The fake's fixtures, made visible to pytest in this module.
fake_customerio_server = fakes.fake_customerio_server
fake_customerio = fakes.fake_customerio

T = TypeVar("T")
EMAIL = "jane.doe+vip@example.com"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def settings_for(fake: FakeCustomerIO, **overrides: Any) -> Settings:
    values: dict[str, Any] = {**fake.settings_env(), "DATABASE_URL": "sqlite:///:memory:"}
    values.update(overrides)
    return Settings(**values)


async def send_one(settings: Settings, request: CioRequest) -> CioResponse:
    async with CustomerIOClient(settings) as client:
        return await client.send(request)


def identify(identifier: str, **attributes: Any) -> CioRequest:
    path = f"/api/v1/customers/{path_identifier(identifier)}"
    return CioRequest("track", "PUT", path, attributes)


def track(identifier: str, body: dict[str, Any]) -> CioRequest:
    path = f"/api/v1/customers/{path_identifier(identifier)}/events"
    return CioRequest("track", "POST", path, body)


def send_email(**overrides: Any) -> CioRequest:
    body = {"transactional_message_id": 3, "to": EMAIL, "identifiers": {"email": EMAIL}}
    return CioRequest("app", "POST", "/v1/send/email", {**body, **overrides}, idempotent=False)


def assert_no_secret(exc: BaseException) -> None:
    text = str(exc)
    for secret in (TRACK_API_KEY, APP_API_KEY, EMAIL, path_identifier(EMAIL), "Basic ", "Bearer"):
        assert secret not in text, f"{secret!r} leaked into {text!r}"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The client: requests on the wire ----------------------------------------------------------


def test_identify_sends_basic_auth_exact_path_and_body(fake_customerio: FakeCustomerIO) -> None:
    """A Track identify is an authorised PUT with the percent-encoded identifier and JSON body."""
    response = run(send_one(settings_for(fake_customerio), identify(EMAIL, plan="pro", seats=3)))
    assert (response.status_code, response.body) == (200, "{}")
    (record,) = fake_customerio.requests
    assert record["method"] == "PUT"
    assert record["path"] == "/api/v1/customers/jane.doe%2Bvip%40example.com"
    assert record["authorized"] is True
    assert record["body"] == {"plan": "pro", "seats": 3}
    assert record["headers"]["user-agent"] == f"billbridge/{__version__}"
    assert record["headers"]["content-type"] == "application/json"
    assert fake_customerio.person(EMAIL) == {
        "email": EMAIL,
        "cio_id": "3000001",
        "plan": "pro",
        "seats": 3,
    }


def test_authorization_headers_are_exact_basic_and_bearer() -> None:
    """Track carries Basic base64(site_id:track key) and App carries Bearer <app key>."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    settings = Settings(
        CUSTOMERIO_SITE_ID="site", CUSTOMERIO_TRACK_API_KEY="tk", CUSTOMERIO_APP_API_KEY="ak"
    )

    async def scenario() -> None:
        async with CustomerIOClient(settings, transport=httpx.MockTransport(handler)) as client:
            await client.send(identify("cus_1", a=1))
            await client.send(send_email())

    run(scenario())
    assert seen[0].headers["authorization"] == "Basic c2l0ZTp0aw=="
    assert seen[1].headers["authorization"] == "Bearer ak"


def test_send_email_uses_bearer_and_returns_delivery(fake_customerio: FakeCustomerIO) -> None:
    """A transactional send reaches /v1/send/email authorised and answers a delivery id."""
    response = run(send_one(settings_for(fake_customerio), send_email(message_data={"n": 1})))
    body = json.loads(response.body)
    assert set(body) == {"delivery_id", "queued_at"}
    (sent,) = fake_customerio.sends
    assert sent["body"]["message_data"] == {"n": 1}
    assert fake_customerio.requests[0]["authorized"] is True


def test_query_parameters_are_sent(fake_customerio: FakeCustomerIO) -> None:
    """`CioRequest.query` becomes the query string (manual segment id_type)."""
    request = CioRequest(
        "track",
        "POST",
        "/api/v1/segments/7/add_customers",
        {"ids": [EMAIL]},
        query={"id_type": "email"},
    )
    run(send_one(settings_for(fake_customerio), request))
    assert fake_customerio.requests[0]["query"] == {"id_type": "email"}
    assert fake_customerio.segments == {7: {EMAIL}}


def test_region_urls_follow_customerio_region() -> None:
    """Without overrides, CUSTOMERIO_REGION=eu selects track-eu and api-eu; us the US hosts."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={})

    async def scenario(region: str) -> None:
        settings = Settings(
            CUSTOMERIO_SITE_ID="s",
            CUSTOMERIO_TRACK_API_KEY="t",
            CUSTOMERIO_APP_API_KEY="a",
            CUSTOMERIO_REGION=region,
            CUSTOMERIO_TRACK_URL=None,
            CUSTOMERIO_APP_URL=None,
        )
        async with CustomerIOClient(settings, transport=httpx.MockTransport(handler)) as client:
            await client.send(identify("cus_1"))
            await client.send(send_email())

    run(scenario("eu"))
    run(scenario("us"))
    assert seen == [
        "https://track-eu.customer.io/api/v1/customers/cus_1",
        "https://api-eu.customer.io/v1/send/email",
        "https://track.customer.io/api/v1/customers/cus_1",
        "https://api.customer.io/v1/send/email",
    ]


def test_region_check_returns_region(fake_customerio: FakeCustomerIO) -> None:
    """check_region() reads {url, region, environment_id} with the Track credentials."""
    fake_customerio.configure(region="eu", environment_id=42)

    async def scenario() -> dict[str, Any]:
        async with CustomerIOClient(settings_for(fake_customerio)) as client:
            return await client.check_region()

    assert run(scenario()) == {
        "url": "https://track-eu.customer.io",
        "region": "eu",
        "environment_id": 42,
    }


def test_many_concurrent_calls_share_the_pool(fake_customerio: FakeCustomerIO) -> None:
    """100 concurrent identifies all succeed over the shared keep-alive pool."""

    async def scenario() -> None:
        async with CustomerIOClient(settings_for(fake_customerio)) as client:
            await asyncio.gather(*(client.send(identify(f"cus_{n}", n=n)) for n in range(100)))

    run(scenario())
    assert len(fake_customerio.people) == 100


def test_calls_beyond_the_connections_wait_for_one_and_time_out_like_httpx() -> None:
    """Calls wait for a free connection (at most one call per connection), each goes to the
    least busy pool, and a wait longer than the pool timeout is httpx's PoolTimeout."""
    release = asyncio.Event()
    two_in_flight = asyncio.Event()
    in_flight: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        in_flight.append(request.url.path)
        if len(in_flight) == 2:
            two_in_flight.set()
        await release.wait()
        return httpx.Response(200, json={})

    def make_client(connections: int) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=connections)
        return httpx.AsyncClient(transport=httpx.MockTransport(handler), limits=limits)

    async def scenario() -> None:
        pools = client_module._Pools(make_client, 2, 2, pool_timeout=0.2)
        first = asyncio.create_task(pools.request("GET", "http://cio.test/a"))
        second = asyncio.create_task(pools.request("GET", "http://cio.test/b"))
        await asyncio.wait_for(two_in_flight.wait(), 5)
        assert pools._busy == [1, 1]  # one call on each pool
        with pytest.raises(httpx.PoolTimeout):
            await pools.request("GET", "http://cio.test/c")
        assert in_flight == ["/a", "/b"]  # the third call was never sent
        third = asyncio.create_task(pools.request("GET", "http://cio.test/d"))
        for _ in range(20):  # turns of the loop in which an unblocked call would go out
            await asyncio.sleep(0)
        assert in_flight == ["/a", "/b"]  # waiting, not sent
        release.set()
        answers = await asyncio.gather(first, second, third)
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert in_flight == ["/a", "/b", "/d"]
        assert pools._busy == [0, 0]
        await pools.aclose()

    run(scenario())


def test_a_pool_timeout_is_retryable_and_nothing_was_sent(fake_customerio: FakeCustomerIO) -> None:
    """Every connection busy for longer than CUSTOMERIO_TIMEOUT: the call that waited for
    one fails as retryable with nothing sent (the calls on the connections time out too)."""
    fake_customerio.delay_next(5.0, count=None)
    settings = settings_for(fake_customerio, CUSTOMERIO_TIMEOUT=1.5)
    calls = client_module.MAX_CONNECTIONS + 1

    async def scenario() -> list[BaseException | CioResponse]:
        async with CustomerIOClient(settings) as client:
            sends = (client.send(identify(f"cus_{n}", n=n)) for n in range(calls))
            return await asyncio.gather(*sends, return_exceptions=True)

    outcomes = run(scenario())
    assert all(isinstance(o, RetryableDeliveryError) for o in outcomes)
    waited = [o for o in outcomes if "PoolTimeout" in str(o)]
    assert waited
    assert all("nothing was sent" in str(o) for o in waited)
    # At most one call per connection reached Customer.io.
    assert len(fake_customerio.requests) <= client_module.MAX_CONNECTIONS


# The client: classification -----------------------------------------------------------------


def test_429_with_retry_after_is_retryable_with_delay(fake_customerio: FakeCustomerIO) -> None:
    """A 429 with Retry-After: 7 raises RetryableDeliveryError with retry_after == 7."""
    fake_customerio.fail_next(429, retry_after=7)
    with pytest.raises(RetryableDeliveryError) as info:
        run(send_one(settings_for(fake_customerio), identify(EMAIL, a=1)))
    assert (info.value.status_code, info.value.retry_after) == (429, 7.0)
    assert not isinstance(info.value, AmbiguousSendError)
    assert_no_secret(info.value)


def test_app_rate_limit_answer_is_retryable_after_one_second(
    fake_customerio: FakeCustomerIO,
) -> None:
    """An App call over the fake's rate limit raises RetryableDeliveryError, retry_after == 1."""
    fake_customerio.configure(app_rate_limit=1)

    async def scenario() -> None:
        async with CustomerIOClient(settings_for(fake_customerio)) as client:
            await client.send(send_email())
            await client.send(send_email())

    with pytest.raises(RetryableDeliveryError) as info:
        run(scenario())
    assert info.value.retry_after == 1.0
    assert "rate limited to 1 requests per 1s" in str(info.value)
    assert len(fake_customerio.sends) == 1


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
def test_server_errors_are_retryable(fake_customerio: FakeCustomerIO, status: int) -> None:
    """408 and 5xx raise RetryableDeliveryError with the status and no Retry-After."""
    fake_customerio.fail_next(status)
    with pytest.raises(RetryableDeliveryError) as info:
        run(send_one(settings_for(fake_customerio), identify(EMAIL, a=1)))
    assert (info.value.status_code, info.value.retry_after) == (status, None)
    assert fake_customerio.person(EMAIL) is None


def test_outage_is_retryable(fake_customerio: FakeCustomerIO) -> None:
    """While the fake's outage switch is on, calls fail retryably; after it, they succeed."""
    fake_customerio.set_outage(True)
    with pytest.raises(RetryableDeliveryError):
        run(send_one(settings_for(fake_customerio), identify("cus_1", a=1)))
    fake_customerio.set_outage(False)
    run(send_one(settings_for(fake_customerio), identify("cus_1", a=1)))
    assert fake_customerio.person("cus_1") is not None


def test_400_is_terminal_with_customerio_detail(fake_customerio: FakeCustomerIO) -> None:
    """An invalid event is a TerminalDeliveryError naming the scrubbed path and the detail."""
    with pytest.raises(TerminalDeliveryError) as info:
        run(send_one(settings_for(fake_customerio), track(EMAIL, {"name": " ", "data": {}})))
    message = str(info.value)
    assert message == (
        "Customer.io answered 400 to POST /api/v1/customers/{identifier}/events: name is required"
    )
    assert info.value.status_code == 400
    assert json.loads(info.value.response_body or "") == {"meta": {"errors": ["name is required"]}}


def test_wrong_key_is_terminal_naming_the_settings(fake_customerio: FakeCustomerIO) -> None:
    """A 401 on Track is terminal and says which environment variables to check."""
    settings = settings_for(fake_customerio, CUSTOMERIO_TRACK_API_KEY="wrong-secret-key")
    with pytest.raises(TerminalDeliveryError) as info:
        run(send_one(settings, identify(EMAIL, a=1)))
    assert info.value.status_code == 401
    assert "CUSTOMERIO_TRACK_API_KEY" in str(info.value)
    assert "wrong-secret-key" not in str(info.value)
    assert_no_secret(info.value)


def test_track_key_on_app_api_is_rejected(fake_customerio: FakeCustomerIO) -> None:
    """Using the Track key as the App key gets 401 and a message naming CUSTOMERIO_APP_API_KEY."""
    settings = settings_for(fake_customerio, CUSTOMERIO_APP_API_KEY=TRACK_API_KEY)
    with pytest.raises(TerminalDeliveryError) as info:
        run(send_one(settings, send_email()))
    assert info.value.status_code == 401
    assert "CUSTOMERIO_APP_API_KEY" in str(info.value)
    assert fake_customerio.sends == []
    assert_no_secret(info.value)


def test_missing_credentials_are_terminal_and_send_nothing(fake_customerio: FakeCustomerIO) -> None:
    """Without keys the client refuses at once, naming the variables to set."""
    settings = settings_for(
        fake_customerio,
        CUSTOMERIO_SITE_ID=None,
        CUSTOMERIO_TRACK_API_KEY=None,
        CUSTOMERIO_APP_API_KEY=None,
    )
    with pytest.raises(
        TerminalDeliveryError, match="CUSTOMERIO_SITE_ID and CUSTOMERIO_TRACK_API_KEY"
    ):
        run(send_one(settings, identify("cus_1")))
    with pytest.raises(TerminalDeliveryError, match="set CUSTOMERIO_APP_API_KEY"):
        run(send_one(settings, send_email()))
    assert fake_customerio.requests == []


def test_connection_refused_is_retryable() -> None:
    """A closed port raises RetryableDeliveryError (nothing was sent), even for a send."""
    port = closed_port()
    settings = Settings(
        CUSTOMERIO_SITE_ID=SITE_ID,
        CUSTOMERIO_TRACK_API_KEY=TRACK_API_KEY,
        CUSTOMERIO_APP_API_KEY=APP_API_KEY,
        CUSTOMERIO_TRACK_URL=f"http://127.0.0.1:{port}",
        CUSTOMERIO_APP_URL=f"http://127.0.0.1:{port}",
    )
    for request in (identify(EMAIL, a=1), send_email()):
        with pytest.raises(RetryableDeliveryError) as info:
            run(send_one(settings, request))
        assert not isinstance(info.value, AmbiguousSendError)
        assert "nothing was sent" in str(info.value)
        assert_no_secret(info.value)


def test_slow_answer_on_idempotent_call_is_retryable(fake_customerio: FakeCustomerIO) -> None:
    """A read timeout on an idempotent Track call is retryable, not ambiguous."""
    fake_customerio.delay_next(3.0)
    settings = settings_for(fake_customerio, CUSTOMERIO_TIMEOUT=0.3)
    with pytest.raises(RetryableDeliveryError) as info:
        run(send_one(settings, identify(EMAIL, a=1)))
    assert not isinstance(info.value, AmbiguousSendError)
    assert "timed out" in str(info.value)
    assert_no_secret(info.value)


def test_slow_answer_on_send_is_ambiguous(fake_customerio: FakeCustomerIO) -> None:
    """A read timeout on a transactional send raises AmbiguousSendError: it did happen."""
    fake_customerio.delay_next(3.0, path_prefix="/v1/send/")
    settings = settings_for(fake_customerio, CUSTOMERIO_TIMEOUT=0.3)
    with pytest.raises(AmbiguousSendError) as info:
        run(send_one(settings, send_email()))
    assert "may or may not have acted" in str(info.value)
    assert len(fake_customerio.sends) == 1
    assert_no_secret(info.value)


def test_dropped_connection_is_ambiguous_for_sends_only(fake_customerio: FakeCustomerIO) -> None:
    """A connection closed without an answer is ambiguous for a send, retryable for Track."""
    settings = settings_for(fake_customerio)
    fake_customerio.drop_next(apply=True, path_prefix="/v1/send/")
    with pytest.raises(AmbiguousSendError) as ambiguous:
        run(send_one(settings, send_email()))
    fake_customerio.drop_next()
    with pytest.raises(RetryableDeliveryError) as retryable:
        run(send_one(settings, identify(EMAIL, a=1)))
    assert not isinstance(retryable.value, AmbiguousSendError)
    assert len(fake_customerio.sends) == 1
    assert_no_secret(ambiguous.value)
    assert_no_secret(retryable.value)


def test_redirect_is_not_followed_and_names_the_region(fake_customerio: FakeCustomerIO) -> None:
    """A 307 to the EU host is terminal, not followed, and says to set CUSTOMERIO_REGION."""
    location = "https://track-eu.customer.io/api/v1/customers/x"
    fake_customerio.fail_next(307, headers={"location": location})
    with pytest.raises(TerminalDeliveryError) as info:
        run(send_one(settings_for(fake_customerio), identify(EMAIL, a=1)))
    assert "CUSTOMERIO_REGION" in str(info.value)
    assert "region eu" in str(info.value)
    assert len(fake_customerio.requests) == 1
    assert_no_secret(info.value)


def test_error_messages_never_hold_secrets_or_personal_data(
    fake_customerio: FakeCustomerIO,
) -> None:
    """Across 400, 401, 413 and 5xx answers, no key, header or email reaches the message."""
    settings = settings_for(fake_customerio)
    failures: list[DeliveryError] = []
    cases = [
        (None, track(EMAIL, {"name": "", "data": {"email": EMAIL}})),
        (None, send_email(identifiers={"email": EMAIL, "id": EMAIL})),
        (None, send_email(attachments={"a.txt": "A" * 2_800_000})),
        (503, identify(EMAIL, email=EMAIL)),
    ]
    for status, request in cases:
        if status:
            fake_customerio.fail_next(status, body={"meta": {"error": f"bad {EMAIL}"}})
        with pytest.raises(DeliveryError) as info:
            run(send_one(settings, request))
        failures.append(info.value)
    for failure in failures:
        assert_no_secret(failure)
        assert "{identifier}" in str(failure) or "/v1/send/email" in str(failure)
    assert [failure.status_code for failure in failures] == [400, 400, 413, 503]


# The client: batch -------------------------------------------------------------------------


def person_op(identifier: str, **attributes: Any) -> dict[str, Any]:
    return {
        "type": "person",
        "identifiers": {"id": identifier},
        "action": "identify",
        "attributes": attributes,
    }


def test_batch_splits_requests_under_500_kb(fake_customerio: FakeCustomerIO) -> None:
    """60 operations of ~20 KB go out as several requests, each under 500 KB, all applied."""
    operations = [person_op(f"cus_{n}", blob="x" * 20_000) for n in range(60)]

    async def scenario() -> Any:
        async with CustomerIOClient(settings_for(fake_customerio)) as client:
            return await client.batch(operations)

    result = run(scenario())
    assert (result.total, result.accepted, result.ok) == (60, 60, True)
    assert result.requests == 3
    requests = fake_customerio.requests
    assert [r["status"] for r in requests] == [200, 200, 200]
    assert all(len(json.dumps(r["body"], separators=(",", ":"))) < 500_000 for r in requests)
    assert len(fake_customerio.people) == 60
    assert fake_customerio.violations == ["attribute blob value longer than 1000 bytes"] * 60


def test_batch_reports_207_and_oversize_items_by_original_index(
    fake_customerio: FakeCustomerIO,
) -> None:
    """Invalid items come back by their index in the caller's list; the rest is applied."""
    operations = [
        person_op("cus_0"),
        {"type": "person", "identifiers": {"id": "a", "email": EMAIL}, "action": "identify"},
        person_op("cus_2", blob="y" * 40_000),
        {"type": "person", "identifiers": {"id": "cus_3"}, "action": "event", "name": ""},
        person_op("cus_4"),
    ]

    async def scenario() -> Any:
        async with CustomerIOClient(settings_for(fake_customerio)) as client:
            return await client.batch(operations)

    result = run(scenario())
    assert [(e.index, e.reason, e.field) for e in result.errors] == [
        (1, "invalid", "identifiers"),
        (2, "too_large", None),
        (3, "required", "name"),
    ]
    assert result.accepted == 2
    assert set(fake_customerio.people) == {"cus_0", "cus_4"}
    assert len(fake_customerio.requests[0]["body"]["batch"]) == 4


def test_plan_batches_keeps_order_and_limits() -> None:
    """Chunks keep the original order and respect the request limit given."""
    operations = [{"n": n, "pad": "z" * 90} for n in range(10)]
    chunks, rejected = plan_batches(operations, max_request_bytes=400, max_operation_bytes=200)
    assert [index for chunk in chunks for index in chunk] == list(range(10))
    assert all(len(chunk) == 3 for chunk in chunks[:-1])
    assert rejected == []


# Pure helpers ------------------------------------------------------------------------------


def test_retry_after_accepts_seconds_and_http_dates_and_clamps() -> None:
    """Retry-After parses delta-seconds and HTTP dates, clamped to [0, 21600]."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("5") == 5.0
    assert (
        parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now=now) == 90
    )
    assert (
        parse_retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now=now) == 0
    )
    assert parse_retry_after("999999") == 21_600.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_error_detail_reads_all_three_envelopes() -> None:
    """The detail comes from meta.errors, meta.error or errors[].detail/message."""
    assert error_detail('{"meta":{"errors":["a","b"]}}') == "a; b"
    assert error_detail('{"meta":{"error":"bad merge"}}') == "bad merge"
    assert error_detail('{"errors":[{"detail":"limited","status":"429"}]}') == "limited"
    assert error_detail('{"errors":[{"field":"name","message":"required"}]}') == "name: required"
    assert error_detail("<html>oops</html>") is None


def test_safe_path_hides_identifiers_and_device_tokens() -> None:
    """Person identifiers and device tokens in a path become placeholders."""
    assert safe_path("/api/v1/customers/a%40b.com/devices/tok") == (
        "/api/v1/customers/{identifier}/devices/{device_id}"
    )
    assert safe_path("/v1/send/email") == "/v1/send/email"


# The fake's own rules ------------------------------------------------------------------------


def raw_track(fake: FakeCustomerIO) -> httpx.Client:
    return httpx.Client(base_url=fake.url, auth=(SITE_ID, TRACK_API_KEY), trust_env=False)


def raw_app(fake: FakeCustomerIO) -> httpx.Client:
    headers = {"Authorization": f"Bearer {APP_API_KEY}"}
    return httpx.Client(base_url=fake.url, headers=headers, trust_env=False)


def test_fake_rejects_invalid_events_with_meta_errors(fake_customerio: FakeCustomerIO) -> None:
    """An event without name, with a string timestamp or list data gets 400 meta.errors."""
    with raw_track(fake_customerio) as client:
        response = client.post(
            "/api/v1/customers/cus_1/events", json={"timestamp": "now", "data": []}
        )
    assert response.status_code == 400
    assert response.json() == {
        "meta": {
            "errors": [
                "name is required",
                "timestamp must be an integer (unix seconds)",
                "data must be an object",
            ]
        }
    }
    assert fake_customerio.events == []


def test_fake_stores_a_repeated_event_id_once(fake_customerio: FakeCustomerIO) -> None:
    """Two events with the same id both answer 200 {} and one is stored."""
    event = {"name": "paid", "id": "01HF7YAT00ABCDEFGHJKMNPQRS", "timestamp": 1_700_000_000}
    with raw_track(fake_customerio) as client:
        answers = [client.post("/api/v1/customers/cus_1/events", json=event) for _ in range(2)]
    assert [(a.status_code, a.json()) for a in answers] == [(200, {}), (200, {})]
    assert [e["name"] for e in fake_customerio.events] == ["paid"]


def test_fake_suppress_blocks_until_unsuppress(fake_customerio: FakeCustomerIO) -> None:
    """Suppress deletes the person; later identifies are ignored until unsuppress."""
    with raw_track(fake_customerio) as client:
        client.put("/api/v1/customers/cus_1", json={"plan": "pro"})
        client.post("/api/v1/customers/cus_1/suppress", json={})
        ignored = client.put("/api/v1/customers/cus_1", json={"plan": "team"})
        assert (ignored.status_code, fake_customerio.person("cus_1")) == (200, None)
        assert fake_customerio.is_suppressed("cus_1")
        client.post("/api/v1/customers/cus_1/unsuppress")
        client.put("/api/v1/customers/cus_1", json={"plan": "team"})
    person = fake_customerio.person("cus_1")
    assert person is not None
    assert person["plan"] == "team"


def test_fake_identify_upserts_and_update_flag_never_creates(
    fake_customerio: FakeCustomerIO,
) -> None:
    """Identify merges, null removes, `_update: true` never creates, delete removes."""
    with raw_track(fake_customerio) as client:
        client.put("/api/v1/customers/cus_1", json={"plan": "pro", "seats": 2})
        client.put("/api/v1/customers/cus_1", json={"seats": None, "email": EMAIL})
        client.put("/api/v1/customers/cus_2", json={"plan": "pro", "_update": True})
        assert fake_customerio.person("cus_1") == {
            "id": "cus_1",
            "cio_id": "3000001",
            "plan": "pro",
            "email": EMAIL,
        }
        assert fake_customerio.person(EMAIL) == fake_customerio.person("cus_1")
        client.delete("/api/v1/customers/cus_1")
    assert fake_customerio.people == {}


def test_fake_keeps_track_and_app_credentials_apart(fake_customerio: FakeCustomerIO) -> None:
    """Basic works only on Track, Bearer only on App; failures are 401 with a body."""
    with httpx.Client(base_url=fake_customerio.url, trust_env=False) as client:
        bearer_on_track = client.put(
            "/api/v1/customers/c", json={}, headers={"Authorization": f"Bearer {APP_API_KEY}"}
        )
        basic_on_app = client.post("/v1/send/email", json={}, auth=(SITE_ID, TRACK_API_KEY))
        app_key_as_bearer_track = client.post(
            "/v1/send/email", json={}, headers={"Authorization": f"Bearer {TRACK_API_KEY}"}
        )
    assert bearer_on_track.status_code == 401
    assert bearer_on_track.json() == {"meta": {"error": "Unauthorized request"}}
    assert basic_on_app.status_code == 401
    assert app_key_as_bearer_track.json()["errors"][0]["status"] == "401"


def test_fake_rate_limits_the_app_api(fake_customerio: FakeCustomerIO) -> None:
    """The 11th App call within a second is 429 with the documented body and Retry-After: 1."""
    body = {"transactional_message_id": 1, "to": EMAIL, "identifiers": {"id": "cus_1"}}
    with raw_app(fake_customerio) as client:
        answers = [client.post("/v1/send/email", json=body) for _ in range(11)]
    assert [a.status_code for a in answers[:10]] == [200] * 10
    limited = answers[10]
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "1"
    detail = limited.json()["errors"][0]
    assert detail["status"] == "429"
    assert detail["detail"].startswith("rate limited to 10 requests per 1s (reference ")
    assert len(fake_customerio.sends) == 10


def test_fake_validates_transactional_sends(fake_customerio: FakeCustomerIO) -> None:
    """Missing `to` or two identifiers is 400 meta.error; every valid call is recorded."""
    with raw_app(fake_customerio) as client:
        no_to = client.post("/v1/send/email", json={"transactional_message_id": 1})
        two_ids = client.post(
            "/v1/send/email",
            json={
                "transactional_message_id": 1,
                "to": EMAIL,
                "identifiers": {"id": "a", "email": EMAIL},
            },
        )
        good = {"transactional_message_id": 1, "to": EMAIL, "identifiers": {"id": "a"}}
        first, second = (
            client.post("/v1/send/email", json=good),
            client.post("/v1/send/email", json=good),
        )
    assert (no_to.status_code, no_to.json()) == (400, {"meta": {"error": "to is required"}})
    assert two_ids.status_code == 400
    assert first.json()["delivery_id"] != second.json()["delivery_id"]
    assert len(fake_customerio.sends) == 2


def test_fake_broadcast_triggers(fake_customerio: FakeCustomerIO) -> None:
    """Known broadcasts answer {"id": n}; unknown ones 404; unknown people 422."""
    fake_customerio.configure(known_broadcasts=[12])
    with raw_app(fake_customerio) as client:
        ok = client.post("/v1/campaigns/12/triggers", json={"data": {"a": 1}})
        unknown = client.post("/v1/campaigns/13/triggers", json={})
        missing = client.post("/v1/campaigns/12/triggers", json={"ids": ["nobody"]})
        ignored = client.post(
            "/v1/campaigns/12/triggers", json={"ids": ["nobody"], "id_ignore_missing": True}
        )
    assert (ok.status_code, ok.json()) == (200, {"id": 1})
    assert unknown.status_code == 404
    assert missing.status_code == 422
    assert ignored.json() == {"id": 2}
    assert [t["broadcast_id"] for t in fake_customerio.triggers] == [12, 12]


def test_fake_segments_and_v2_entity_rules(fake_customerio: FakeCustomerIO) -> None:
    """Segment ids must be 1..1000 strings; a v2 entity needs exactly one identifier."""
    with raw_track(fake_customerio) as client:
        too_many = client.post(
            "/api/v1/segments/3/add_customers", json={"ids": [str(n) for n in range(1001)]}
        )
        added = client.post("/api/v1/segments/3/add_customers", json={"ids": ["a", "b"]})
        client.post("/api/v1/segments/3/remove_customers", json={"ids": ["a"]})
        entity = client.post(
            "/api/v2/entity",
            json={"type": "person", "action": "identify", "identifiers": {}},
        )
        unknown = client.get("/api/v1/nothing-here")
    assert too_many.status_code == 400
    assert added.json() == {}
    assert fake_customerio.segments == {3: {"b"}}
    assert entity.status_code == 400
    assert entity.json()["errors"][0]["field"] == "identifiers"
    assert unknown.status_code == 404


def test_fake_inspection_api_over_http(fake_customerio: FakeCustomerIO) -> None:
    """Faults, outage, people and reset work through /_fake/ as well as in-process."""
    with raw_track(fake_customerio) as client:
        client.post("/_fake/faults", json={"add": [{"status": 502, "count": 1}]})
        failed = client.put("/api/v1/customers/cus_1", json={"a": 1})
        client.put("/api/v1/customers/cus_1", json={"a": 1})
        people = client.get("/_fake/people").json()["people"]
        client.post("/_fake/faults", json={"outage": True})
        outage = client.put("/api/v1/customers/cus_1", json={"a": 2})
        requests = client.get("/_fake/requests").json()["requests"]
        client.post("/_fake/reset")
        after_reset = client.get("/_fake/people").json()["people"]
    assert failed.status_code == 502
    assert people["cus_1"]["a"] == 1
    assert outage.status_code == 503
    assert [r["status"] for r in requests] == [502, 200, 503]
    assert all("authorization" not in r["headers"] for r in requests)
    assert after_reset == {}


@pytest.mark.slow
def test_standalone_fake_keeps_state_across_sigkill(tmp_path: Path) -> None:
    """The process fake replays its --state-file journal after SIGKILL and keeps dedupe."""
    state = tmp_path / "cio.jsonl"
    with FakeCustomerIOProcess(state_file=state) as fake:
        with httpx.Client(base_url=fake.url, auth=(SITE_ID, TRACK_API_KEY), trust_env=False) as c:
            c.put("/api/v1/customers/cus_1", json={"plan": "pro"})
            c.post("/api/v1/customers/cus_1/events", json={"name": "paid", "id": "01X"})
        fake.kill()
        fake.start()
        with httpx.Client(base_url=fake.url, auth=(SITE_ID, TRACK_API_KEY), trust_env=False) as c:
            again = c.post("/api/v1/customers/cus_1/events", json={"name": "paid", "id": "01X"})
        assert again.status_code == 200
        assert fake.people["cus_1"]["plan"] == "pro"
        assert [e["name"] for e in fake.events] == ["paid"]
        assert fake.stats["duplicate_events"] == 1
