"""Track v1 requests as Track v2 batch operations, so many deliveries share one HTTP call.

The planner builds every person call in its v1 form (`PUT /api/v1/customers/{id}`, ...):
that is what the dashboard shows and what a single delivery sends. When several
deliveries are ready at once the worker sends them through `POST /api/v2/batch`
instead; each v1 request maps to exactly one v2 operation with the same effect:

    PUT    /api/v1/customers/{id}              -> {"action": "identify", "attributes": body}
    POST   /api/v1/customers/{id}/events       -> {"action": "event", "name", "id",
                                                   "timestamp", "attributes": data}
    DELETE /api/v1/customers/{id}              -> {"action": "delete"}
    POST   /api/v1/customers/{id}/suppress     -> {"action": "suppress"}
    POST   /api/v1/customers/{id}/unsuppress   -> {"action": "unsuppress"}

Customer.io reads a v1 path identifier by its shape (customerio-api.md §2): `cio_...` is a
cio_id (the v2 form has no prefix), a value with `@` an email, anything else an id.
Segments, transactional sends and broadcasts have no v2 batch form and stay single calls.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from billbridge.customerio.requests import CioRequest

_PREFIX = "/api/v1/customers/"
_EVENT_KEYS = ("name", "id", "timestamp", "type")


def v2_identifiers(path_identifier: str) -> dict[str, str]:
    """The v2 `identifiers` object for a v1 path identifier (already percent-decoded)."""
    if path_identifier.startswith("cio_"):
        return {"cio_id": path_identifier[len("cio_") :]}
    if "@" in path_identifier:
        return {"email": path_identifier}
    return {"id": path_identifier}


def to_batch_operation(request: CioRequest) -> dict[str, Any] | None:
    """The v2 batch operation equivalent to `request`, or None when it has none."""
    if request.api != "track" or request.query or not request.path.startswith(_PREFIX):
        return None
    rest = request.path[len(_PREFIX) :]
    identifier_part, _, suffix = rest.partition("/")
    if not identifier_part:
        return None
    operation: dict[str, Any] = {
        "type": "person",
        "identifiers": v2_identifiers(unquote(identifier_part)),
    }
    body = request.body or {}
    if suffix == "" and request.method == "PUT":
        operation["action"] = "identify"
        operation["attributes"] = dict(body)
    elif suffix == "" and request.method == "DELETE":
        operation["action"] = "delete"
    elif suffix == "events" and request.method == "POST":
        if body.get("type", "event") != "event":
            return None  # page/screen views keep their v1 form
        operation["action"] = "event"
        for key in _EVENT_KEYS[:3]:
            if key in body:
                operation[key] = body[key]
        operation["attributes"] = dict(body.get("data") or {})
    elif suffix in ("suppress", "unsuppress") and request.method == "POST":
        operation["action"] = suffix
    else:
        return None
    return operation
