"""Outsider and authenticated input that used to give a 500: each is a 4xx or a page now."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from billbridge.services import Services
from billbridge.stripe.events import MAX_NESTING
from billbridge.stripe.samples import sample_event
from billbridge.stripe.signature import sign_payload
from tests.support.auth import AUTH
from tests.support.dashboard import (
    WEBHOOK_SECRET,
    csrf_from,
    dashboard_settings,
    logged_in,
    running_dashboard,
)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Services]]:
    with running_dashboard(dashboard_settings(tmp_path)) as running:
        yield running


def _nested(levels: int) -> dict[str, Any]:
    """A mapping `levels` deep: {"n": {"n": ... {} }}."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"n": value}
    return value


def _post(url: str, event: dict[str, Any], **header: str) -> httpx.Response:
    body = json.dumps(event).encode()
    headers = {
        "Content-Type": "application/json",
        "Stripe-Signature": sign_payload(body, WEBHOOK_SECRET),
        **header,
    }
    return httpx.post(f"{url}/webhooks/stripe", content=body, headers=headers, timeout=20)


def test_a_signature_timestamp_of_4400_digits_is_a_400(served: tuple[str, Services]) -> None:
    """`t=<4,400 digits>` (past Python's int limit) is a malformed header, not a 500."""
    url, _ = served
    event = sample_event("customer.created")
    response = _post(url, event, **{"Stripe-Signature": "t=" + "9" * 4400 + ",v1=abc"})
    assert response.status_code == 400
    assert response.json() == {"error": "malformed Stripe-Signature header"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"created": 2**63}, "64-bit range"),
        ({"created": 2**64 - 1}, "64-bit range"),
        ({"created": 2**62}, "between 1970 and 9999"),
        ({"created": -1}, "between 1970 and 9999"),
    ],
)
def test_a_signed_event_with_an_out_of_range_created_is_a_400(
    served: tuple[str, Services], fields: dict[str, Any], message: str
) -> None:
    """A genuine signature on `created >= 2**63` (or past year 9999) is refused with 400."""
    url, services = served
    event = {**sample_event("customer.created", event_id="evt_big_created"), **fields}
    response = _post(url, event)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    assert services.store.get_event("evt_big_created") is None


def test_an_amount_beyond_64_bits_anywhere_is_a_400(served: tuple[str, Services]) -> None:
    """Any integer a database column could not hold is refused at ingest."""
    url, _ = served
    event = sample_event("charge.succeeded", event_id="evt_big_amount")
    event["data"]["object"]["amount"] = 2**64 - 1
    response = _post(url, event)
    assert response.status_code == 400
    assert "64-bit range" in response.json()["error"]


def test_nesting_beyond_the_bound_is_a_400(served: tuple[str, Services]) -> None:
    """An event nested deeper than MAX_NESTING levels (orjson accepts 1,024) is refused."""
    url, _ = served
    event = sample_event("customer.created", event_id="evt_too_deep")
    event["data"]["object"]["metadata"] = _nested(MAX_NESTING)
    response = _post(url, event)
    assert response.status_code == 400
    assert f"nested deeper than {MAX_NESTING} levels" in response.json()["error"]


def test_every_page_renders_the_deepest_event_ingest_accepts(served: tuple[str, Services]) -> None:
    """An event exactly MAX_NESTING levels deep is stored, and every page and API answer
    showing it (list, detail, JSON, Try it, test) renders."""
    url, _ = served
    event = sample_event("customer.created", event_id="evt_deepest")
    event["data"]["object"]["metadata"] = _nested(MAX_NESTING - 3)  # event > data > object
    assert _post(url, event).status_code == 200
    with httpx.Client(base_url=url, headers=AUTH, timeout=20) as api:
        assert api.get("/api/events").status_code == 200
        detail = api.get("/api/events/evt_deepest")
        assert detail.status_code == 200
        assert detail.json()["payload"]["id"] == "evt_deepest"
        tested = api.post(
            "/api/workflows/customer-created/test", json={"stripe_event_id": "evt_deepest"}
        )
        assert tested.status_code == 200, tested.text
    with logged_in(url) as browser:
        assert browser.get("/events").status_code == 200
        assert browser.get("/events/evt_deepest").status_code == 200
        page = browser.get("/workflows/customer-created/try")
        tried = browser.post(
            "/workflows/customer-created/try",
            data={
                "source": "stored",
                "stripe_event_id": "evt_deepest",
                "csrf_token": csrf_from(page.text),
            },
        )
        assert tried.status_code == 200, tried.text


def test_a_cursor_past_64_bits_is_a_400_and_the_page_says_so(
    served: tuple[str, Services],
) -> None:
    """`cursor=99999999999999999999` is a 400 on the API and an error on the page."""
    url, _ = served
    with httpx.Client(base_url=url, headers=AUTH, timeout=20) as api:
        for cursor in ("99999999999999999999", "9223372036854775808", "²", "-1"):
            response = api.get("/api/events", params={"cursor": cursor})
            assert response.status_code == 400, (cursor, response.text)
            assert "invalid cursor" in response.json()["detail"]
        assert api.get("/api/events", params={"cursor": "9223372036854775807"}).status_code == 200
    with logged_in(url) as browser:
        page = browser.get("/events", params={"cursor": "99999999999999999999"})
        assert page.status_code == 400  # the events page, with the error shown
        assert "invalid cursor: pass back the next_cursor" in page.text


def test_a_replay_count_that_is_not_ascii_digits_is_ignored(served: tuple[str, Services]) -> None:
    """`/events?replayed=²` (a digit to `str.isdigit`, not to `int`) renders the page."""
    url, _ = served
    with logged_in(url) as browser:
        for value in ("²", "9" * 5000, "12"):
            page = browser.get("/events", params={"replayed": value})
            assert page.status_code == 200, value
        assert "Replaying 12 deliveries now." in page.text


def test_a_deeply_nested_event_on_try_it_and_the_test_api_is_a_4xx_or_an_error_shown(
    served: tuple[str, Services],
) -> None:
    """An event nested 1,000 deep, given to the test API or to Try it's send form, is
    refused with a clear message rather than a 500."""
    url, _ = served
    event = sample_event("customer.created")
    event["data"]["object"]["metadata"] = "DEEP"
    deep = '{"n":' * 999 + "{}" + "}" * 999  # json.dumps itself would recurse too deep
    text = json.dumps(event).replace('"DEEP"', deep)
    with httpx.Client(base_url=url, headers=AUTH, timeout=20) as api:
        response = api.post(
            "/api/workflows/customer-created/test",
            content='{"event": ' + text + "}",
            headers={"Content-Type": "application/json"},
        )
        assert 400 <= response.status_code < 500, response.text
    with logged_in(url) as browser:
        page = browser.get("/workflows/customer-created/try")
        sent = browser.post(
            "/workflows/customer-created/try/send",
            data={"event_json": text, "csrf_token": csrf_from(page.text)},
        )
        assert sent.status_code < 500, sent.text
        assert "nested deeper than 64 levels" in sent.text
