"""The shared comparison of a Stripe webhook endpoint with what the enabled workflows need."""

from __future__ import annotations

from billbridge.stripe.endpoint_check import (
    check_endpoints,
    compare_endpoint,
    endpoints_for,
    missing_event_types,
)

NEEDED = ["invoice.paid", "charge.failed"]


def _endpoint(url: str, events: list[str], status: str = "enabled") -> dict[str, object]:
    host = url.split("/")[2]
    return {"id": f"we_{host}", "url": url, "enabled_events": events, "status": status}


def test_missing_types_are_sorted_and_a_wildcard_sends_everything() -> None:
    """Types not enabled are missing (sorted); `*` means every type."""
    assert missing_event_types(["invoice.paid"], NEEDED) == ["charge.failed"]
    assert missing_event_types(["*"], NEEDED) == []
    assert missing_event_types(NEEDED, []) == []


def test_a_disabled_endpoint_is_not_ok_even_with_every_type() -> None:
    """A disabled endpoint sends nothing, whatever it lists."""
    gaps = compare_endpoint(
        _endpoint("https://a.example/webhooks/stripe", ["*"], "disabled"), NEEDED
    )
    assert gaps.disabled
    assert not gaps.ok
    assert gaps.missing == ()


def test_our_endpoint_is_found_by_public_url_or_by_path() -> None:
    """With BILLBRIDGE_PUBLIC_URL only its exact URL counts; without it any path
    /webhooks/stripe; none at the public URL means everything is missing; no guess: None."""
    ours = _endpoint("https://billing.example.com/webhooks/stripe/", ["invoice.paid"])
    other = _endpoint("https://other.example.com/hooks", ["*"])
    assert endpoints_for([ours, other], "https://billing.example.com/") == [ours]
    assert endpoints_for([ours, other], None) == [ours]
    gaps = check_endpoints([ours, other], NEEDED, None)
    assert gaps is not None
    assert gaps.missing == ("charge.failed",)
    nowhere = check_endpoints([other], NEEDED, "https://billing.example.com")
    assert nowhere is not None
    assert nowhere.endpoint_id == ""
    assert nowhere.missing == tuple(sorted(NEEDED))
    assert check_endpoints([other], NEEDED, None) is None
    assert check_endpoints([ours], [], None) is None
    complete = _endpoint("https://billing.example.com/webhooks/stripe", ["*"])
    found = check_endpoints([ours, complete], NEEDED, "https://billing.example.com")
    assert found is not None
    assert found.ok
