"""CioRequest: one planned Customer.io call, built by the workflow engine, sent by the client.

A request never holds credentials: the client adds authentication when it sends, so a
request can be stored, shown in the dashboard and returned by the API as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

CioApi = Literal["track", "app"]
HttpMethod = Literal["GET", "PUT", "POST", "DELETE"]

# The value that removes a person attribute in an identify call (Track v1 body, Track v2
# `attributes`): the empty string. Customer.io's Track API spec documents "Pass `null` or
# an empty string to remove an attribute" for object and relationship attributes; of the
# two, only the string fits the v1 person-attribute schema (string, integer or boolean),
# so it is the documented-safest form for people (docs/internals.md, "Removing attributes").
ATTRIBUTE_REMOVAL = ""


def path_identifier(value: str) -> str:
    """Percent-encode a person identifier for a Track path (`@`, `+`, `/`, spaces...)."""
    return quote(value, safe="")


@dataclass(frozen=True)
class CioRequest:
    """One HTTP call to Customer.io.

    `path` is everything after the API origin, already percent-encoded, e.g.
    `/api/v1/customers/cus_123/events` (Track) or `/v1/send/email` (App).
    `idempotent` is False for calls that Customer.io does not dedupe (transactional
    sends, broadcast triggers): those are never repeated blindly after a timeout.
    """

    api: CioApi
    method: HttpMethod
    path: str
    body: dict[str, Any] | None = None
    idempotent: bool = True
    query: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """What was (or would be) sent, safe to store and show: no headers, no secrets."""
        result: dict[str, Any] = {"api": self.api, "method": self.method, "path": self.path}
        if self.query:
            result["query"] = dict(self.query)
        if self.body is not None:
            result["body"] = self.body
        return result


@dataclass(frozen=True)
class CioResponse:
    """A 2xx answer from Customer.io."""

    status_code: int
    body: str  # truncated to a few KiB
    duration_ms: float
