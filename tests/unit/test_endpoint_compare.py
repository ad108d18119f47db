"""The one comparison of a Stripe webhook endpoint with what the enabled workflows need,
shared by doctor, the dashboard, `setup-webhook --sync` and the endpoint alert: which
endpoint is ours, what `*` and a disabled endpoint mean, and when the alert can tell."""

from __future__ import annotations

from typing import Any

import stripe

from billbridge.stripe.endpoint_sync import check_listed, compare

NEEDED = ["invoice.paid", "charge.failed"]
PUBLIC = "https://billing.example.com/webhooks/stripe"
URL = PUBLIC


def _endpoint(url: str, events: list[str], status: str = "enabled", **extra: Any) -> dict[str, Any]:
    host = url.split("/")[2]
    return {
        "id": f"we_{host}_{len(events)}",
        "url": url,
        "enabled_events": events,
        "status": status,
        **extra,
    }


def test_compare_names_missing_and_extra_types_and_treats_the_wildcard_as_everything() -> None:
    """Missing and extra types are listed; `*` misses nothing but is itself extra."""
    drifted = compare({"id": "we_1", "enabled_events": ["b", "z"], "url": URL}, ["a", "b"])
    assert (drifted.state, drifted.missing, drifted.extra) == ("out_of_sync", ("a",), ("z",))
    assert drifted.short_of_needs is True
    wildcard = compare({"id": "we_1", "enabled_events": ["*"], "url": URL}, ["a", "b"])
    assert (wildcard.missing, wildcard.extra) == ((), ("*",))
    assert wildcard.short_of_needs is False  # extra types are no gap for the alert
    exact = compare(
        {"id": "we_1", "enabled_events": ["b", "a"], "api_version": stripe.api_version}, ["a", "b"]
    )
    assert exact.state == "in_sync"
    assert not exact.version_differs
    assert not exact.problem
    disabled = compare({"id": "we_1", "enabled_events": ["a"], "status": "disabled"}, ["a"])
    assert disabled.state == "out_of_sync"
    assert "disabled" in disabled.summary()


def test_a_disabled_endpoint_falls_short_even_with_every_type() -> None:
    """A disabled endpoint sends nothing, whatever it lists."""
    check = compare(_endpoint(PUBLIC, ["*"], "disabled"), NEEDED)
    assert check.disabled
    assert check.missing == ()
    assert check.short_of_needs is True


def test_ours_is_the_one_at_the_url_else_the_one_setup_webhook_made_else_by_path() -> None:
    """With a URL only that exact URL counts (a trailing slash aside); without it the
    endpoint setup-webhook created (metadata) wins, else any ending in /webhooks/stripe;
    several such candidates are ambiguous."""
    ours = _endpoint(PUBLIC + "/", ["invoice.paid"])
    other = _endpoint("https://other.example.com/hooks", ["*"])
    at_url = check_listed([ours, other], needed=NEEDED, url=PUBLIC)
    assert (at_url.endpoint_id, at_url.missing) == (ours["id"], ("charge.failed",))
    by_path = check_listed([other, ours], needed=NEEDED, url=None)
    assert by_path.endpoint_id == ours["id"]
    second = _endpoint("https://b.example.com/webhooks/stripe", ["*"])
    ambiguous = check_listed([ours, second], needed=NEEDED, url=None)
    assert ambiguous.state == "ambiguous"
    assert ambiguous.short_of_needs is None
    made = {**second, "metadata": {"created_by": "billbridge"}}
    assert check_listed([ours, made], needed=NEEDED, url=None).endpoint_id == made["id"]


def test_no_endpoint_falls_short_only_where_one_is_expected() -> None:
    """None at the known URL: everything is missing and the alert fires; without a URL
    there is no guess (None); with nothing needed nothing falls short."""
    other = _endpoint("https://other.example.com/hooks", ["*"])
    nowhere = check_listed([other], needed=NEEDED, url=PUBLIC)
    assert (nowhere.state, nowhere.url, nowhere.short_of_needs) == ("missing", PUBLIC, True)
    assert check_listed([other], needed=NEEDED, url=None).short_of_needs is None
    ours = _endpoint(PUBLIC, [])
    assert check_listed([ours], needed=[], url=None).short_of_needs is False


def test_of_several_at_one_url_the_complete_one_counts() -> None:
    """Stripe calls the URL from each endpoint at it: one that sends everything needed
    makes it whole."""
    lacking = _endpoint(PUBLIC + "/", ["invoice.paid"])
    complete = _endpoint(PUBLIC, ["*"])
    found = check_listed([lacking, complete], needed=NEEDED, url=PUBLIC)
    assert found.endpoint_id == complete["id"]
    assert found.short_of_needs is False
