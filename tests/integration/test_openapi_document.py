"""The OpenAPI document says what the service does: both ways to authenticate on every
/api operation with its 401, the error shapes, the Stripe webhook's body and signature
header, Prometheus text on /metrics, and the health answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from billbridge.app import create_app
from tests.support.dashboard import dashboard_settings, running_dashboard


@pytest.fixture
def document(tmp_path: Path) -> dict[str, Any]:
    return create_app(dashboard_settings(tmp_path), run_worker=False).openapi()


def _operations(document: dict[str, Any], prefix: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, operations in document["paths"].items()
        if path.startswith(prefix)
        for method, operation in operations.items()
    ]


def test_every_api_operation_needs_a_token_or_a_session(document: dict[str, Any]) -> None:
    """securitySchemes holds a bearer token and the session cookie; every /api operation
    requires one of them and documents 401 (and 403 for unsafe methods) and 503."""
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerToken"] == {**schemes["bearerToken"], "type": "http", "scheme": "bearer"}
    assert schemes["sessionCookie"]["in"] == "cookie"
    assert schemes["sessionCookie"]["name"] == "billbridge_session"
    operations = _operations(document, "/api/")
    assert len(operations) >= 19
    for path, method, operation in operations:
        assert operation["security"] == [{"bearerToken": []}, {"sessionCookie": []}], path
        assert {"401", "503"} <= set(operation["responses"]), (method, path)
        assert ("403" in operation["responses"]) == (method not in ("get", "head")), path


def test_error_answers_have_their_real_shapes(document: dict[str, Any]) -> None:
    """422 is any of FastAPI's validation list, Billbridge's field errors or a plain
    detail; 400 and 404 are a plain detail."""
    events = document["paths"]["/api/events"]["get"]["responses"]
    shapes = events["422"]["content"]["application/json"]["schema"]["anyOf"]
    assert {s["$ref"].rsplit("/", 1)[1] for s in shapes} == {
        "HTTPValidationError",
        "ValidationErrorOut",
        "ErrorOut",
    }
    assert events["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorOut")
    create = document["paths"]["/api/workflows"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/Workflow")


def test_the_webhook_takes_a_signed_stripe_event(document: dict[str, Any]) -> None:
    """POST /webhooks/stripe: no login, a Stripe event as application/json, the
    Stripe-Signature header required, JSON answers for 200/400/413/415/503."""
    webhook = document["paths"]["/webhooks/stripe"]["post"]
    assert webhook["security"] == []
    (header,) = webhook["parameters"]
    assert (header["name"], header["in"], header["required"]) == (
        "Stripe-Signature",
        "header",
        True,
    )
    schema = webhook["requestBody"]["content"]["application/json"]["schema"]
    assert schema["$ref"].endswith("/StripeEvent")
    event = document["components"]["schemas"]["StripeEvent"]
    assert set(event["required"]) == {"id", "object", "type", "created", "livemode", "data"}
    assert set(webhook["responses"]) == {"200", "400", "413", "415", "503"}


def test_metrics_are_text_and_health_answers_are_described(tmp_path: Path) -> None:
    """/metrics is documented and served as Prometheus text; /healthz and /readyz say
    their JSON answers (readyz with its 503)."""
    settings = dashboard_settings(tmp_path)
    with running_dashboard(settings) as (url, _):
        metrics = httpx.get(url + "/metrics", timeout=10)
    document = create_app(settings, run_worker=False).openapi()
    paths = document["paths"]
    assert list(paths["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "billbridge" in metrics.text
    assert paths["/healthz"]["get"]["responses"]["200"]["content"]["application/json"]
    assert set(paths["/readyz"]["get"]["responses"]) == {"200", "503"}
