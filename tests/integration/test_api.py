"""The JSON API under /api/ (SPEC §3) on a real SQLite store, over loopback HTTP (uvicorn)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from billbridge.app import create_app
from billbridge.config import Settings
from billbridge.ids import deterministic_ulid
from billbridge.store.base import Store
from billbridge.store.records import AttemptRecord
from billbridge.stripe.samples import sample_event
from billbridge.stripe.signature import sign_payload
from tests.support.auth import API_TOKEN_ENV, AUTH
from tests.support.live_server import serve_app

SECRET = "whsec_api_test_secret"

WELCOME = {
    "id": "welcome",
    "name": "Welcome",
    "trigger": {"events": ["customer.created"]},
    "actions": [
        {"type": "identify", "attributes": {"name": "{{ object.name }}"}},
        {"type": "track_event", "name": "signed_up", "data": {"currency": "{{ object.currency }}"}},
        {"type": "send_email", "transactional_message_id": 7},
    ],
}


@dataclass
class Api:
    client: httpx.Client
    store: Store

    def webhook(self, event: dict[str, Any]) -> None:
        body = json.dumps(event).encode()
        response = self.client.post(
            "/webhooks/stripe",
            content=body,
            headers={
                "Content-Type": "application/json",
                "Stripe-Signature": sign_payload(body, SECRET),
            },
        )
        assert response.status_code == 200, response.text

    def finish_all(
        self, *, sent_ok_action: str | None = None, failed_type: str | None = None
    ) -> None:
        """Play the worker: complete every due delivery, recording one attempt each."""
        for claim in self.store.claim_due("test-worker", 500, 60):
            failed = claim.event_type == failed_type
            attempt = AttemptRecord(
                outcome="terminal_error" if failed else "succeeded",
                started_at=1_700_000_000.0,
                duration_ms=12.5,
                request={"api": "track", "method": "POST", "path": "/api/v1/x"},
                response_status=400 if failed else 200,
                response_body="{}",
                error="bad request" if failed else None,
            )
            self.store.complete(
                claim.delivery_id,
                claim.claim_id,
                "failed" if failed else "succeeded",
                attempt,
                error="bad request" if failed else None,
                sent_ok=claim.action_type == sent_ok_action,
            )


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    settings = Settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'api.db'}",
        STRIPE_WEBHOOK_SECRET=SECRET,
        BILLBRIDGE_VAR_DIR=str(tmp_path / "var"),
        **API_TOKEN_ENV,
    )
    app = create_app(settings, run_worker=False)
    with serve_app(app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        yield Api(client, app.state.services.store)


def _event(event_type: str = "customer.created", **fields: Any) -> dict[str, Any]:
    return sample_event(event_type, **fields)


def test_events_list_is_newest_first_and_pages_with_a_cursor(api: Api) -> None:
    """Five events come back newest first, two per page, each exactly once, then no cursor."""
    ids = []
    for _ in range(5):
        event = _event("charge.succeeded")
        api.webhook(event)
        ids.append(event["id"])
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = api.client.get("/api/events", params=params).json()
        seen.extend(item["stripe_event_id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    assert cursor is None


def test_events_list_filters_by_type_customer_and_status(api: Api) -> None:
    """type=, customer= and status= each narrow the list to the matching events."""
    paid = _event("invoice.paid", customer_id="cus_filter_a")
    failed = _event("charge.failed", customer_id="cus_filter_b")
    api.webhook(paid)
    api.webhook(failed)
    api.finish_all(failed_type="charge.failed")

    def ids(**params: Any) -> list[str]:
        response = api.client.get("/api/events", params=params)
        assert response.status_code == 200, response.text
        return [item["stripe_event_id"] for item in response.json()["items"]]

    assert ids(type="invoice.paid") == [paid["id"]]
    assert ids(customer="cus_filter_b") == [failed["id"]]
    assert ids(status="failed") == [failed["id"]]
    assert ids(status="succeeded") == [paid["id"]]


def test_events_list_rejects_bad_limit_status_and_cursor(api: Api) -> None:
    """An out-of-range limit or unknown status is 422; a malformed cursor is 400."""
    assert api.client.get("/api/events", params={"limit": 0}).status_code == 422
    assert api.client.get("/api/events", params={"limit": 201}).status_code == 422
    assert api.client.get("/api/events", params={"status": "weird"}).status_code == 422
    response = api.client.get("/api/events", params={"cursor": "not-a-cursor"})
    assert response.status_code == 400
    assert "cursor" in response.json()["detail"]


def test_event_detail_has_payload_deliveries_and_attempts(api: Api) -> None:
    """The detail carries summary fields, the parsed payload, and each delivery's attempts."""
    event = _event("charge.failed", customer_id="cus_detail")
    api.webhook(event)
    api.finish_all(failed_type="charge.failed")
    body = api.client.get(f"/api/events/{event['id']}").json()
    assert body["stripe_event_id"] == event["id"]
    assert body["type"] == "charge.failed"
    assert body["status"] == "failed"
    assert body["customer_id"] == "cus_detail"
    assert body["api_version"] == event["api_version"]
    assert body["payload"] == event
    assert body["deliveries"]
    delivery = body["deliveries"][0]
    assert delivery["workflow_id"] == "payment-failed"
    assert delivery["action"] == "track_event"
    assert delivery["status"] == "failed"
    assert delivery["attempt_count"] == 1
    assert delivery["last_error"] == "bad request"
    assert delivery["attempts"] == [
        {
            "time": 1_700_000_000.0,
            "outcome": "terminal_error",
            "request": {"api": "track", "method": "POST", "path": "/api/v1/x"},
            "response_status": 400,
            "response_body": "{}",
            "error": "bad request",
            "duration_ms": 12.5,
        }
    ]


def test_unknown_event_is_a_json_404(api: Api) -> None:
    """Detail and replay of an unknown event id answer 404 with a JSON detail."""
    for response in (
        api.client.get("/api/events/evt_missing"),
        api.client.post("/api/events/evt_missing/replay"),
    ):
        assert response.status_code == 404
        assert "evt_missing" in response.json()["detail"]


def test_replay_leaves_a_sent_email_alone_unless_forced(api: Api) -> None:
    """Without force a succeeded transactional send is listed in skipped_sent; with force it
    is replayed too, and every replayed delivery is pending again."""
    assert api.client.post("/api/workflows", json=WELCOME).status_code == 201
    event = _event("customer.created")
    api.webhook(event)
    api.finish_all(sent_ok_action="send_email")
    deliveries = api.client.get(f"/api/events/{event['id']}").json()["deliveries"]
    email = [d["delivery_id"] for d in deliveries if d["action"] == "send_email"]
    others = sorted(d["delivery_id"] for d in deliveries if d["action"] != "send_email")
    assert len(email) == 1
    assert len(others) >= 3  # the welcome identify and track, and the default workflow's

    plain = api.client.post(f"/api/events/{event['id']}/replay").json()
    held = plain.pop("held_back")
    assert plain == {"stripe_event_id": event["id"], "replayed": others, "skipped_sent": email}
    assert [(h["delivery_id"], h["reason"]) for h in held] == [(email[0], "sent")]
    statuses = {
        d["delivery_id"]: d["status"]
        for d in api.client.get(f"/api/events/{event['id']}").json()["deliveries"]
    }
    assert statuses[email[0]] == "succeeded"
    assert {statuses[i] for i in others} == {"pending"}

    forced = api.client.post(f"/api/events/{event['id']}/replay", params={"force": "true"})
    assert forced.json()["replayed"] == sorted([*others, *email])
    assert forced.json()["skipped_sent"] == []


def test_replay_failed_resets_only_failed_deliveries(api: Api) -> None:
    """POST /api/replay-failed returns the failed deliveries it made due again."""
    ok = _event("invoice.paid")
    bad = _event("charge.failed")
    api.webhook(ok)
    api.webhook(bad)
    api.finish_all(failed_type="charge.failed")
    failed_ids = [
        d["delivery_id"] for d in api.client.get(f"/api/events/{bad['id']}").json()["deliveries"]
    ]
    response = api.client.post("/api/replay-failed", params={"since": "1h"})
    assert response.json() == {"replayed": sorted(failed_ids), "held_back": []}
    assert api.client.post("/api/replay-failed").json() == {"replayed": [], "held_back": []}
    assert api.client.post("/api/replay-failed", params={"since": "soon"}).status_code == 400


def test_workflow_crud_round_trip(api: Api) -> None:
    """Create, read, replace, list and delete a workflow; the catalog sees each change."""
    created = api.client.post("/api/workflows", json=WELCOME)
    assert created.status_code == 201
    assert created.json()["id"] == "welcome"
    assert api.client.get("/api/workflows/welcome").json() == created.json()

    replaced = api.client.put("/api/workflows/welcome", json={**WELCOME, "name": "Hello"})
    assert replaced.status_code == 200
    assert replaced.json()["name"] == "Hello"
    without_id = {key: value for key, value in WELCOME.items() if key != "id"}
    assert (
        api.client.put("/api/workflows/welcome", json={**without_id, "enabled": False}).json()[
            "enabled"
        ]
        is False
    )
    listed = {w["id"]: w for w in api.client.get("/api/workflows").json()["items"]}
    assert listed["welcome"]["enabled"] is False
    assert "payment-failed" in listed  # the defaults are there too

    assert api.client.delete("/api/workflows/welcome").status_code == 204
    assert api.client.get("/api/workflows/welcome").status_code == 404
    assert api.client.delete("/api/workflows/welcome").status_code == 404
    ids = [w["id"] for w in api.client.get("/api/workflows").json()["items"]]
    assert "welcome" not in ids


def test_workflow_create_conflict_and_validation_errors(api: Api) -> None:
    """An existing id is 409; an invalid definition is 422 naming every bad field."""
    assert api.client.post("/api/workflows", json=WELCOME).status_code == 201
    assert api.client.post("/api/workflows", json=WELCOME).status_code == 409
    bad = {
        "id": "broken",
        "name": "Broken",
        "trigger": {"events": ["charge.faild"]},
        "actions": [{"type": "add_to_segment"}],
    }
    response = api.client.post("/api/workflows", json=bad)
    assert response.status_code == 422
    body = response.json()
    assert body["detail"] == "invalid workflow"
    assert set(body["errors"]) == {"trigger.events.0", "actions.0.segment_id"}
    assert "charge.failed" in body["errors"]["trigger.events.0"]
    assert api.client.get("/api/workflows/broken").status_code == 404


def test_workflow_replace_checks_id_and_existence(api: Api) -> None:
    """PUT with another id in the body is 422 on `id`; PUT of an unknown workflow is 404."""
    assert api.client.post("/api/workflows", json=WELCOME).status_code == 201
    mismatch = api.client.put("/api/workflows/welcome", json={**WELCOME, "id": "other"})
    assert mismatch.status_code == 422
    assert set(mismatch.json()["errors"]) == {"id"}
    assert api.client.put("/api/workflows/nope", json={**WELCOME, "id": "nope"}).status_code == 404
    invalid = api.client.put("/api/workflows/welcome", json={**WELCOME, "actions": []})
    assert invalid.status_code == 422
    assert "actions" in invalid.json()["errors"]


def test_workflow_test_returns_the_exact_requests_and_sends_nothing(api: Api) -> None:
    """A dry run on a given event returns each action's exact Customer.io request summary."""
    assert api.client.post("/api/workflows", json=WELCOME).status_code == 201
    event = _event(
        "customer.created",
        event_id="evt_preview_1",
        created=1_700_000_000,
        customer_id="cus_preview",
        email="ada@example.com",
    )
    response = api.client.post("/api/workflows/welcome/test", json={"event": event})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["event"] == {"id": "evt_preview_1", "type": "customer.created"}
    assert body["person"] == {
        "identifier": "cus_preview",
        "customer_id": "cus_preview",
        "email": "ada@example.com",
    }
    track_id = deterministic_ulid("evt_preview_1", "welcome", 1, created=1_700_000_000)
    assert body["requests"] == [
        {
            "action_index": 0,
            "action": "identify",
            "status": "planned",
            "request": {
                "api": "track",
                "method": "PUT",
                "path": "/api/v1/customers/cus_preview",
                "body": {
                    "email": "ada@example.com",
                    "stripe_customer_id": "cus_preview",
                    "name": "Jane Doe",
                },
            },
            "reason": None,
        },
        {
            "action_index": 1,
            "action": "track_event",
            "status": "planned",
            "request": {
                "api": "track",
                "method": "POST",
                "path": "/api/v1/customers/cus_preview/events",
                "body": {
                    "name": "signed_up",
                    "id": track_id,
                    "timestamp": 1_700_000_000,
                    "data": {
                        "currency": "usd",
                        "stripe_event_id": "evt_preview_1",
                        "stripe_object_id": "cus_preview",
                        "livemode": False,
                    },
                },
            },
            "reason": None,
        },
        {
            "action_index": 2,
            "action": "send_email",
            "status": "planned",
            "request": {
                "api": "app",
                "method": "POST",
                "path": "/v1/send/email",
                "body": {
                    "transactional_message_id": 7,
                    "to": "ada@example.com",
                    "identifiers": {"id": "cus_preview"},
                    "message_data": {"stripe_event_id": "evt_preview_1"},
                },
            },
            "reason": None,
        },
    ]
    assert api.client.get("/api/events").json()["items"] == []


def test_workflow_test_defaults_to_a_sample_and_accepts_a_stored_event(api: Api) -> None:
    """Without a body the sample is of the first trigger type; a stored event id works too."""
    default = api.client.post("/api/workflows/payment-failed/test").json()
    assert default["event"]["type"] == "charge.failed"
    # payment_failed, then the billing-profile identify
    assert [step["status"] for step in default["requests"]] == ["planned", "planned"]
    # The dry run shows the removals exactly as sent: "" for what the profile lacks.
    profile_identify = default["requests"][1]["request"]["body"]
    assert profile_identify["trial_end"] == ""
    assert profile_identify["mrr_by_currency"] == ""
    stored = _event("charge.failed", customer_id="cus_stored")
    api.webhook(stored)
    response = api.client.post(
        "/api/workflows/payment-failed/test", json={"stripe_event_id": stored["id"]}
    )
    step = response.json()["requests"][0]
    assert step["request"]["path"] == "/api/v1/customers/cus_stored/events"
    assert step["request"]["body"]["data"]["stripe_event_id"] == stored["id"]


def test_workflow_test_sends_the_billing_profile_as_a_delivery_would(api: Api) -> None:
    """A dry run of an identify with the profile shows the attributes computed from what
    is stored (here a subscription), exactly as the worker would send them."""
    subscription = _event(
        "customer.subscription.created", customer_id="cus_profile", email="p@example.com"
    )
    api.webhook(subscription)
    response = api.client.post(
        "/api/workflows/subscription-created/test",
        json={"stripe_event_id": subscription["id"]},
    )
    assert response.status_code == 200, response.text
    identify = next(
        step for step in response.json()["requests"] if step["request"]["method"] == "PUT"
    )
    body = identify["request"]["body"]
    assert body["subscription_id"] == subscription["data"]["object"]["id"]
    assert body["subscription_status"] == subscription["data"]["object"]["status"]
    assert body["mrr"] > 0


def test_workflow_test_errors(api: Api) -> None:
    """Unknown workflow or stored event is 404; two event sources at once is 422; an event
    without a customer is skipped with the reason."""
    assert api.client.post("/api/workflows/nope/test").status_code == 404
    missing = api.client.post("/api/workflows/payment-failed/test", json={"stripe_event_id": "x"})
    assert missing.status_code == 404
    both = api.client.post(
        "/api/workflows/payment-failed/test",
        json={"event_type": "charge.failed", "stripe_event_id": "x"},
    )
    assert both.status_code == 422
    anonymous = _event("charge.failed")
    anonymous["data"]["object"]["customer"] = None
    anonymous["data"]["object"]["billing_details"]["email"] = None
    anonymous["data"]["object"]["receipt_email"] = None
    steps = api.client.post("/api/workflows/payment-failed/test", json={"event": anonymous}).json()[
        "requests"
    ]
    assert [step["status"] for step in steps] == ["skipped", "skipped"]
    assert "no Stripe customer" in steps[0]["reason"]


def test_openapi_documents_every_api_path(api: Api) -> None:
    """/openapi.json lists each /api path with its methods and the response schemas."""
    schema = api.client.get("/openapi.json").json()
    paths = schema["paths"]
    assert set(paths["/api/events"]) == {"get"}
    assert set(paths["/api/events/{stripe_event_id}"]) == {"get"}
    assert set(paths["/api/events/{stripe_event_id}/replay"]) == {"post"}
    assert set(paths["/api/replay-failed"]) == {"post"}
    assert set(paths["/api/workflows"]) == {"get", "post"}
    assert set(paths["/api/workflows/{workflow_id}"]) == {"get", "put", "delete"}
    assert set(paths["/api/workflows/{workflow_id}/test"]) == {"post"}
    components = schema["components"]["schemas"]
    for name in ("EventListOut", "EventOut", "DeliveryOut", "AttemptOut", "ReplayOut"):
        assert name in components
