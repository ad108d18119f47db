"""Does a Stripe webhook endpoint send what the enabled workflows need? One comparison,
shared by alerts (and anything else that checks the endpoint).

    gaps = compare_endpoint(endpoint, needed=["invoice.paid", "charge.failed"])
    gaps.missing, gaps.disabled, gaps.ok
    gaps = check_endpoints(api.list_webhook_endpoints(), needed, settings.public_url)

`enabled_events` of `["*"]` means every event type. A disabled endpoint sends nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

WEBHOOK_PATH = "/webhooks/stripe"


@dataclass(frozen=True)
class EndpointGaps:
    """What one endpoint lacks: event types the workflows need, or being enabled at all."""

    endpoint_id: str
    url: str
    missing: tuple[str, ...]  # sorted
    disabled: bool

    @property
    def ok(self) -> bool:
        return not self.missing and not self.disabled


def missing_event_types(enabled_events: Iterable[str], needed: Iterable[str]) -> list[str]:
    """The needed event types an endpoint with `enabled_events` does not send, sorted."""
    enabled = set(enabled_events)
    if "*" in enabled:
        return []
    return sorted(set(needed) - enabled)


def compare_endpoint(endpoint: Mapping[str, Any], needed: Iterable[str]) -> EndpointGaps:
    """Compare one endpoint (a Stripe `webhook_endpoint` object as a dict) with `needed`."""
    enabled = [str(t) for t in endpoint.get("enabled_events") or []]
    return EndpointGaps(
        endpoint_id=str(endpoint.get("id") or ""),
        url=str(endpoint.get("url") or ""),
        missing=tuple(missing_event_types(enabled, needed)),
        disabled=endpoint.get("status") == "disabled",
    )


def endpoints_for(
    endpoints: Sequence[Mapping[str, Any]], public_url: str | None
) -> list[Mapping[str, Any]]:
    """The endpoints that point at this Billbridge: URL `<public_url>/webhooks/stripe` when
    BILLBRIDGE_PUBLIC_URL is set, otherwise any endpoint whose path is /webhooks/stripe."""
    if public_url:
        wanted = public_url.rstrip("/") + WEBHOOK_PATH
        return [e for e in endpoints if str(e.get("url") or "").rstrip("/") == wanted]
    return [
        e for e in endpoints if urlsplit(str(e.get("url") or "")).path.rstrip("/") == WEBHOOK_PATH
    ]


def check_endpoints(
    endpoints: Sequence[Mapping[str, Any]], needed: Iterable[str], public_url: str | None
) -> EndpointGaps | None:
    """How this Billbridge's endpoint falls short (`.ok` when one of them is complete), or
    None when it cannot be told: no workflow needs anything, or no endpoint looks like ours
    and BILLBRIDGE_PUBLIC_URL is not set. With it set and no endpoint at that URL, every
    needed type is missing (endpoint_id "")."""
    wanted = sorted(set(needed))
    if not wanted:
        return None
    ours = endpoints_for(endpoints, public_url)
    if not ours:
        if not public_url:
            return None
        url = public_url.rstrip("/") + WEBHOOK_PATH
        return EndpointGaps(endpoint_id="", url=url, missing=tuple(wanted), disabled=False)
    compared = [compare_endpoint(endpoint, wanted) for endpoint in ours]
    return next((gaps for gaps in compared if gaps.ok), compared[0])
