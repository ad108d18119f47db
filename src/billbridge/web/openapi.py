"""The OpenAPI document, completed with what FastAPI cannot see from the route signatures.

    install_openapi(app)      # after every router is included
    app.openapi()             # what /openapi.json serves

Adds: the two ways to authenticate (`bearerToken`, `sessionCookie`) required on every
`/api` operation, with their 401 (and for unsafe methods 403) answers; 503 when the store
is unavailable; the real error shapes (FastAPI's request validation, Billbridge's
`{"detail", "errors"}` and a plain `{"detail"}` can each answer 422; 400 and 404 are
`{"detail"}`); the Stripe webhook's request (a Stripe event as `application/json`, the
`Stripe-Signature` header) and answers; `/metrics` as Prometheus text; the health answers;
the known Stripe event types a workflow trigger accepts.
The schemathesis suite (`tests/fuzz/test_api_schema.py`) holds the app to this document.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from billbridge.web.auth import CSRF_HEADER, SAFE_METHODS, SESSION_COOKIE
from billbridge.workflows.event_types import known_event_types

JSON = "application/json"
MAX_CREATED = 253_402_300_799  # 9999-12-31T23:59:59Z, in Unix seconds
WEBHOOK_PATH = "/webhooks/stripe"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


SECURITY_SCHEMES: dict[str, Any] = {
    "bearerToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "BILLBRIDGE_API_TOKEN, or a token made by `billbridge tokens create` "
        "or on the Tokens page",
    },
    "sessionCookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": SESSION_COOKIE,
        "description": f"A dashboard login; POST, PUT and DELETE also need the {CSRF_HEADER} "
        "header with the session's CSRF token",
    },
}

EXTRA_SCHEMAS: dict[str, Any] = {
    "ErrorOut": {
        "type": "object",
        "title": "ErrorOut",
        "properties": {"detail": {"type": "string", "title": "Detail"}},
        "required": ["detail"],
    },
    "StripeEvent": {
        "type": "object",
        "title": "StripeEvent",
        "description": "A Stripe event object exactly as Stripe sends it (other fields are "
        "kept as they are).",
        "properties": {
            "id": {
                "type": "string",
                "pattern": "^evt_",
                "maxLength": 255,
                "examples": ["evt_1NG8Du2eZvKYlo2CUI79vXWy"],
            },
            "object": {"type": "string", "const": "event"},
            "type": {
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
                "examples": ["invoice.paid"],
            },
            "created": {
                "type": "integer",
                "minimum": 0,
                "maximum": MAX_CREATED,
                "description": "Unix seconds",
            },
            "livemode": {"type": "boolean"},
            "api_version": {"type": ["string", "null"]},
            "account": {"type": "string", "description": "Connect: the connected account"},
            "data": {
                "type": "object",
                "properties": {
                    "object": {"type": "object", "description": "The Stripe object"},
                    "previous_attributes": {"type": "object"},
                },
                "required": ["object"],
            },
        },
        "required": ["id", "object", "type", "created", "livemode", "data"],
    },
    "WebhookStored": {
        "type": "object",
        "title": "WebhookStored",
        "properties": {
            "received": {"type": "boolean", "const": True},
            "duplicate": {"type": "boolean"},
            "deliveries": {"type": "integer", "minimum": 0},
        },
        "required": ["received", "duplicate", "deliveries"],
    },
    "WebhookRejected": {
        "type": "object",
        "title": "WebhookRejected",
        "properties": {"error": {"type": "string"}},
        "required": ["error"],
    },
    "Health": {
        "type": "object",
        "title": "Health",
        "properties": {"status": {"type": "string", "const": "ok"}},
        "required": ["status"],
    },
    "Readiness": {
        "type": "object",
        "title": "Readiness",
        "properties": {
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "database": {"type": "boolean"},
        },
        "required": ["status", "database"],
    },
}

# What FastAPI's plain `str` parameters cannot say (anything else answers 400): a cursor
# is the decimal row id `next_cursor` gave; a duration is a number and a unit.
PARAMETER_SCHEMAS: dict[tuple[str, str, str], dict[str, Any]] = {
    ("/api/events", "get", "cursor"): {"pattern": "^[0-9]{1,18}$"},
    ("/api/replay-failed", "post", "since"): {"pattern": "^[0-9]{1,9}(\\.[0-9]{1,6})?[smhdw]?$"},
    ("/api/connections/{name}", "put", "name"): {"enum": ["stripe", "customerio"]},
    ("/api/connections/{name}/test", "post", "name"): {"enum": ["stripe", "customerio"]},
}

PARAMETER_EXAMPLES = {"workflow_id": ["invoice-paid"], "stripe_event_id": ["evt_1Nx2Yz"]}

# Request bodies typed `dict` in the route (validated by `validate_workflow` for clearer
# errors) that are in fact the Workflow model.
WORKFLOW_BODIES = {("/api/workflows", "post"), ("/api/workflows/{workflow_id}", "put")}

UNPROCESSABLE = _json(
    {"anyOf": [_ref("HTTPValidationError"), _ref("ValidationErrorOut"), _ref("ErrorOut")]},
    "Invalid input: request validation (`detail` a list of problems), an invalid workflow "
    "or setting (`errors`: field path -> problem), or a plain `detail`",
)


def _webhook_operation(operation: dict[str, Any]) -> None:
    operation["security"] = []
    operation["parameters"] = [
        {
            "name": "Stripe-Signature",
            "in": "header",
            "required": True,
            "description": "t=TIMESTAMP,v1=HMAC-SHA256 of `TIMESTAMP.BODY` with the "
            "endpoint's signing secret (one v1 per secret while rolling)",
            "schema": {"type": "string"},
        }
    ]
    operation["requestBody"] = {
        "required": True,
        "content": {JSON: {"schema": _ref("StripeEvent")}},
    }
    rejected = _ref("WebhookRejected")
    operation["responses"] = {
        "200": _json(_ref("WebhookStored"), "Stored (or a duplicate of a stored event)"),
        "400": _json(rejected, "Bad signature, stale timestamp, or not a Stripe event"),
        "413": _json(rejected, "Body over BILLBRIDGE_MAX_BODY_BYTES (1 MiB)"),
        "415": _json(rejected, "Content-Type is not application/json"),
        "503": _json(rejected, "The store is unavailable; Stripe will retry"),
    }


def _health_operations(paths: dict[str, Any]) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        if path in paths:
            paths[path]["get"]["security"] = []
    if "/healthz" in paths:
        paths["/healthz"]["get"]["responses"] = {"200": _json(_ref("Health"), "The process is up")}
    if "/readyz" in paths:
        paths["/readyz"]["get"]["responses"] = {
            "200": _json(_ref("Readiness"), "The database answers"),
            "503": _json(_ref("Readiness"), "The database does not answer"),
        }
    if "/metrics" in paths:
        paths["/metrics"]["get"]["responses"] = {
            "200": {
                "description": "Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        }


def _api_operation(path: str, method: str, operation: dict[str, Any]) -> None:
    operation["security"] = [{"bearerToken": []}, {"sessionCookie": []}]
    if (path, method) in WORKFLOW_BODIES and "requestBody" in operation:
        body = operation["requestBody"]["content"][JSON]["schema"]
        operation["requestBody"]["content"][JSON]["schema"] = {**body, **_ref("Workflow")}
    for parameter in operation.get("parameters", []):
        name = parameter.get("name", "")
        extra = PARAMETER_SCHEMAS.get((path, method, name))
        if extra:
            _narrow(parameter["schema"], extra)
        if name in PARAMETER_EXAMPLES:
            _narrow(parameter["schema"], {"examples": PARAMETER_EXAMPLES[name]})
    responses: dict[str, Any] = operation.setdefault("responses", {})
    error = _ref("ErrorOut")
    responses["401"] = {
        **_json(error, "No credentials, an unknown or revoked token, or an expired session"),
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
    }
    if method.upper() not in SAFE_METHODS:
        responses["403"] = _json(error, f"A session without the {CSRF_HEADER} header")
    if any(p.get("in") == "path" for p in operation.get("parameters", [])):
        responses.setdefault("404", _json(error, "No such object"))
    for status in ("400", "404", "409"):
        if status in responses:
            responses[status] = _json(error, responses[status].get("description", "Refused"))
    if "422" in responses or operation.get("parameters") or "requestBody" in operation:
        responses["422"] = UNPROCESSABLE
    responses["503"] = _json(error, "The database is unavailable; retry later")


def _narrow(schema: dict[str, Any], extra: dict[str, Any]) -> None:
    """Add `extra` to the string branch of a parameter's schema (`str | None` is anyOf)."""
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "string":
            branch.update(extra)


def complete_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Complete FastAPI's generated document in place (see the module docstring)."""
    components = schema.setdefault("components", {})
    components["securitySchemes"] = SECURITY_SCHEMES
    schemas = components.setdefault("schemas", {})
    for name, extra in EXTRA_SCHEMAS.items():
        schemas.setdefault(name, extra)
    trigger = schemas.get("Trigger", {}).get("properties", {}).get("events", {})
    if trigger.get("items") == {"type": "string"}:  # the model checks names at run time
        trigger["items"] = {"type": "string", "enum": sorted(known_event_types())}
    paths: dict[str, Any] = schema.get("paths", {})
    if WEBHOOK_PATH in paths and "post" in paths[WEBHOOK_PATH]:
        _webhook_operation(paths[WEBHOOK_PATH]["post"])
    _health_operations(paths)
    for path, operations in paths.items():
        if path == "/api" or path.startswith("/api/"):
            for method, operation in operations.items():
                _api_operation(path, method, operation)
    return schema


def install_openapi(app: FastAPI) -> None:
    """Serve the completed document from `app.openapi()` (and so `/openapi.json`)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete_openapi(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
