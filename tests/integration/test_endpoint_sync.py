"""The Stripe endpoint stays in sync with the enabled workflows: `doctor`, `setup-webhook
--sync`, the overview's warning and Sync button, the message after saving a workflow, and
BILLBRIDGE_WEBHOOK_AUTO_SYNC, all through the fake Stripe API over HTTP."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
import yaml

from billbridge.config import Settings
from billbridge.stripe.endpoint_sync import EndpointWatch
from billbridge.web.pages_endpoint import safe_next
from billbridge.workflows.defaults import default_workflows
from tests.fakes import stripe_api as stripe_fakes
from tests.fakes.stripe_api import FakeStripe
from tests.support.auth import AUTH
from tests.support.dashboard import csrf_from, dashboard_settings, logged_in, running_dashboard
from tests.support.stripe_jobs import invoke, use_env

fake_stripe = stripe_fakes.fake_stripe
fake_stripe_server = stripe_fakes.fake_stripe_server

URL = "https://billing.example.com/webhooks/stripe"
TRIGGERS = sorted({t for w in default_workflows() if w.enabled for t in w.trigger.events})
REFUNDS = next(w for w in default_workflows() if w.id == "charge-refunded")
ONLY_REFUNDS = "charge.refunded"  # no other default workflow triggers on it
WITHOUT_REFUNDS = [t for t in TRIGGERS if t != ONLY_REFUNDS]


def _endpoint(
    stripe_fake: FakeStripe,
    events: list[str],
    *,
    url: str = URL,
    api_version: str | None = None,
    billbridge: bool = True,
    status: str = "enabled",
) -> dict[str, Any]:
    """An endpoint as if made earlier (by setup-webhook, or by hand in the Dashboard)."""
    endpoint_id = f"we_test{len(stripe_fake.webhook_endpoints)}{int(time.time() * 1000)}"
    endpoint = {
        "id": endpoint_id,
        "object": "webhook_endpoint",
        "api_version": api_version or stripe.api_version,
        "created": int(time.time()),
        "description": None,
        "enabled_events": events,
        "livemode": False,
        "metadata": {"created_by": "billbridge"} if billbridge else {},
        "secret": "whsec_" + "x" * 24,
        "status": status,
        "url": url,
    }
    stripe_fake.webhook_endpoints[endpoint_id] = endpoint
    return endpoint


def _drifted(stripe_fake: FakeStripe, **options: Any) -> dict[str, Any]:
    """An endpoint missing two needed types and receiving one no workflow uses."""
    return _endpoint(stripe_fake, [*TRIGGERS[2:], "payout.paid"], **options)


# Comparison --------------------------------------------------------------------------------


def test_the_sync_button_returns_only_to_paths_of_this_site() -> None:
    """`next` must be a local path: other hosts and schemes fall back to the overview."""
    assert safe_next("/workflows/charge-failed") == "/workflows/charge-failed"
    for hostile in ("https://evil.example", "//evil.example/x", "/\\evil.example", "", None):
        assert safe_next(hostile) == "/"


def test_the_dashboard_check_is_reused_for_its_ttl_and_redone_when_the_needs_change(
    fake_stripe: FakeStripe,
) -> None:
    """One Stripe list call serves repeated checks for `ttl` seconds; a change of the
    needed types, an expired ttl or `invalidate()` checks again; a Stripe error is a
    check with state "error" (tried again after 30 s), never an exception."""
    _endpoint(fake_stripe, ["a.b"])
    settings = Settings(STRIPE_API_KEY=fake_stripe.api_key, STRIPE_API_BASE=fake_stripe.base_url)
    needed = ["a.b"]
    now = [1000.0]
    watch = EndpointWatch(lambda: settings, lambda: list(needed), ttl=300, clock=lambda: now[0])
    fake_stripe.clear_requests()

    def listed() -> int:
        return len(fake_stripe.requests_to("/v1/webhook_endpoints"))

    assert watch.status().state == "in_sync"
    assert watch.status().state == "in_sync"
    assert listed() == 1
    needed.append("c.d")
    assert watch.status().missing == ("c.d",)
    assert listed() == 2
    now[0] += 301
    watch.status()
    assert listed() == 3
    watch.invalidate()
    watch.status()
    assert listed() == 4

    fake_stripe.fail_next(500, path_prefix="/v1/webhook_endpoints")
    watch.invalidate()
    failed = watch.status()
    assert failed.state == "error"
    assert failed.problem
    now[0] += 31
    assert watch.status().state == "out_of_sync"


# CLI ---------------------------------------------------------------------------------------


def test_setup_webhook_sync_updates_the_existing_endpoint_and_then_finds_nothing_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_stripe: FakeStripe
) -> None:
    """--sync sets enabled_events to the workflows' triggers on the endpoint setup-webhook
    made (found without --url), never creates one, and a second run changes nothing."""
    use_env(monkeypatch, tmp_path, fake_stripe)
    endpoint = _drifted(fake_stripe)
    done = invoke("setup-webhook", "--sync")
    assert done.exit_code == 0, done.output
    assert done.output.startswith(f"Synced webhook endpoint {endpoint['id']}")
    assert f"added (2): {TRIGGERS[0]}, {TRIGGERS[1]}" in done.output
    assert "removed (1): payout.paid" in done.output
    assert sorted(endpoint["enabled_events"]) == TRIGGERS
    assert len(fake_stripe.webhook_endpoints) == 1
    assert endpoint["secret"] not in done.output

    fake_stripe.clear_requests()
    again = invoke("setup-webhook", "--sync")
    assert again.exit_code == 0, again.output
    assert "is in sync already" in again.output
    assert fake_stripe.requests_to(f"/v1/webhook_endpoints/{endpoint['id']}", "POST") == []


def test_setup_webhook_sync_without_an_endpoint_or_with_several_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_stripe: FakeStripe
) -> None:
    """No endpoint: exit 2 and how to create one (nothing created). Two candidates: exit 2
    until BILLBRIDGE_PUBLIC_URL picks one, which is then the only one changed."""
    use_env(monkeypatch, tmp_path, fake_stripe)
    missing = invoke("setup-webhook", "--sync")
    assert missing.exit_code == 2
    assert "no Stripe webhook endpoint" in missing.output
    assert "setup-webhook --url" in missing.output
    assert fake_stripe.webhook_endpoints == {}

    first = _drifted(fake_stripe, url="https://a.example.com/webhooks/stripe")
    second = _drifted(fake_stripe, url="https://b.example.com/webhooks/stripe")
    ambiguous = invoke("setup-webhook", "--sync")
    assert ambiguous.exit_code == 2
    assert first["id"] in ambiguous.output
    assert second["id"] in ambiguous.output
    assert "BILLBRIDGE_PUBLIC_URL" in ambiguous.output

    monkeypatch.setenv("BILLBRIDGE_PUBLIC_URL", "https://b.example.com/")
    chosen = invoke("setup-webhook", "--sync")
    assert chosen.exit_code == 0, chosen.output
    assert sorted(second["enabled_events"]) == TRIGGERS
    assert "payout.paid" in first["enabled_events"]


def test_setup_webhook_sync_reports_an_api_version_it_cannot_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_stripe: FakeStripe
) -> None:
    """Stripe cannot change an endpoint's api_version: sync fixes the events and says how
    to get the pinned version (re-create the endpoint)."""
    use_env(monkeypatch, tmp_path, fake_stripe)
    endpoint = _drifted(fake_stripe, api_version="2020-08-27")
    done = invoke("setup-webhook", "--sync", "--url", URL)
    assert done.exit_code == 0, done.output
    assert sorted(endpoint["enabled_events"]) == TRIGGERS
    assert endpoint["api_version"] == "2020-08-27"
    assert f"api_version is 2020-08-27, not {stripe.api_version}" in done.output
    assert "re-create" in done.output


def test_doctor_fails_on_missing_types_warns_on_the_version_and_passes_once_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_stripe: FakeStripe
) -> None:
    """The doctor line names the missing types (FAIL, exit 1) and the fix; after --sync it
    is OK; an unpinned API version is a WARN."""
    use_env(monkeypatch, tmp_path, fake_stripe)
    assert invoke("migrate").exit_code == 0
    assert invoke("workflows", "list").exit_code == 0  # seeds the default workflows
    endpoint = _drifted(fake_stripe)
    before = invoke("doctor")
    assert before.exit_code == 1
    (line,) = [x for x in before.output.splitlines() if "Stripe webhook endpoint" in x]
    assert line.startswith("FAIL")
    assert TRIGGERS[0] in line
    assert "setup-webhook --sync" in line

    assert invoke("setup-webhook", "--sync").exit_code == 0
    after = invoke("doctor")
    (line,) = [x for x in after.output.splitlines() if "Stripe webhook endpoint" in x]
    assert line.startswith("OK"), line

    endpoint["api_version"] = None
    unpinned = invoke("doctor")
    (line,) = [x for x in unpinned.output.splitlines() if "Stripe webhook endpoint" in x]
    assert line.startswith("WARN")
    assert "not pinned" in line


def test_workflows_apply_reports_the_endpoint_and_syncs_it_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_stripe: FakeStripe
) -> None:
    """`workflows apply` switching a workflow off prints the endpoint's difference; with
    BILLBRIDGE_WEBHOOK_AUTO_SYNC=true the endpoint is updated to match."""
    use_env(monkeypatch, tmp_path, fake_stripe)
    endpoint = _endpoint(fake_stripe, list(TRIGGERS))
    data = {**REFUNDS.to_data(), "enabled": False}
    file = tmp_path / "workflows.yaml"
    file.write_text(yaml.safe_dump({"workflows": [data]}), encoding="utf-8")
    shown = invoke("workflows", "apply", str(file))
    assert shown.exit_code == 0, shown.output
    (line,) = [x for x in shown.output.splitlines() if x.startswith("Stripe webhook endpoint")]
    assert line.startswith("Stripe webhook endpoint: ")
    assert ONLY_REFUNDS in line
    assert sorted(endpoint["enabled_events"]) == TRIGGERS

    data["enabled"] = True
    file.write_text(yaml.safe_dump({"workflows": [data]}), encoding="utf-8")
    assert invoke("workflows", "apply", str(file)).exit_code == 0
    data["enabled"] = False
    file.write_text(yaml.safe_dump({"workflows": [data]}), encoding="utf-8")
    monkeypatch.setenv("BILLBRIDGE_WEBHOOK_AUTO_SYNC", "true")
    synced = invoke("workflows", "apply", str(file))
    assert synced.exit_code == 0, synced.output
    assert "Stripe webhook endpoint synced" in synced.output
    assert sorted(endpoint["enabled_events"]) == WITHOUT_REFUNDS


# Dashboard and API -------------------------------------------------------------------------


def _stripe_settings(tmp_path: Path, stripe_fake: FakeStripe, **extra: Any) -> Any:
    tmp_path.mkdir(exist_ok=True)
    return dashboard_settings(
        tmp_path,
        STRIPE_API_KEY=stripe_fake.api_key,
        STRIPE_API_BASE=stripe_fake.base_url,
        BILLBRIDGE_RECONCILE_INTERVAL="0",
        **extra,
    )


def test_overview_warns_about_the_difference_and_its_sync_button_fixes_the_endpoint(
    tmp_path: Path, fake_stripe: FakeStripe
) -> None:
    """The overview names the missing types with a Sync button; the button without a CSRF
    token is refused; with it the endpoint is updated and the overview says so."""
    endpoint = _drifted(fake_stripe)
    with (
        running_dashboard(_stripe_settings(tmp_path, fake_stripe)) as (url, _),
        logged_in(url) as client,
    ):
        page = client.get("/")
        assert page.status_code == 200
        assert 'data-testid="endpoint-warning"' in page.text
        assert TRIGGERS[0] in page.text
        assert "payout.paid" in page.text
        assert 'data-testid="endpoint-sync"' in page.text

        refused = client.post("/stripe-endpoint/sync", data={"next": "/"})
        assert refused.status_code == 403
        assert "payout.paid" in endpoint["enabled_events"]

        synced = client.post(
            "/stripe-endpoint/sync", data={"next": "/", "csrf_token": csrf_from(page.text)}
        )
        assert synced.status_code == 303
        assert synced.headers["location"] == "/?endpoint=synced"
        assert sorted(endpoint["enabled_events"]) == TRIGGERS
        after = client.get(synced.headers["location"])
        assert 'data-testid="endpoint-synced"' in after.text
        assert 'data-testid="endpoint-warning"' not in after.text


def test_overview_without_a_stripe_key_makes_no_stripe_call_and_shows_no_warning(
    tmp_path: Path, fake_stripe: FakeStripe
) -> None:
    """No STRIPE_API_KEY: nothing to compare, no warning, no request to Stripe."""
    _drifted(fake_stripe)
    fake_stripe.clear_requests()
    with running_dashboard(dashboard_settings(tmp_path)) as (url, _), logged_in(url) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert "endpoint-warning" not in page.text
    assert fake_stripe.requests_to("/v1/webhook_endpoints") == []


def test_toggling_a_workflow_shows_the_endpoint_difference_then_auto_sync_fixes_it(
    tmp_path: Path, fake_stripe: FakeStripe
) -> None:
    """Switching off the only workflow of a type shows, after the save, that the endpoint
    still receives it; with BILLBRIDGE_WEBHOOK_AUTO_SYNC the save updates the endpoint."""
    endpoint = _endpoint(fake_stripe, list(TRIGGERS))
    toggle = f"/workflows/{REFUNDS.id}/toggle"
    with (
        running_dashboard(_stripe_settings(tmp_path / "off", fake_stripe)) as (url, _),
        logged_in(url) as client,
    ):
        listing = client.get("/workflows")
        assert "endpoint-warning" not in listing.text
        switched = client.post(toggle, data={"csrf_token": csrf_from(listing.text)})
        assert switched.status_code == 303
        assert "endpoint=synced" not in switched.headers["location"]
        page = client.get(switched.headers["location"])
        assert 'data-testid="endpoint-warning"' in page.text
        assert ONLY_REFUNDS in page.text.split('data-testid="endpoint-warning"')[1]
        assert sorted(endpoint["enabled_events"]) == TRIGGERS

    auto = _stripe_settings(tmp_path / "on", fake_stripe, BILLBRIDGE_WEBHOOK_AUTO_SYNC="true")
    with running_dashboard(auto) as (url, _), logged_in(url) as client:
        listing = client.get("/workflows")
        switched = client.post(toggle, data={"csrf_token": csrf_from(listing.text)})
        assert "endpoint=synced" in switched.headers["location"]
        assert sorted(endpoint["enabled_events"]) == WITHOUT_REFUNDS
        page = client.get(switched.headers["location"])
        assert 'data-testid="endpoint-synced"' in page.text


def test_saving_a_new_workflow_in_the_editor_shows_the_missing_type_and_sync_returns_to_it(
    tmp_path: Path, fake_stripe: FakeStripe
) -> None:
    """A workflow saved in the editor on a type the endpoint lacks: the "Saved" page names
    it with a Sync button that updates the endpoint and comes back to the workflow."""
    endpoint = _endpoint(fake_stripe, list(TRIGGERS))
    with (
        running_dashboard(_stripe_settings(tmp_path, fake_stripe)) as (url, _),
        logged_in(url) as client,
    ):
        editor = client.get("/workflows/new?template=scratch")
        saved = client.post(
            "/workflows/new",
            data={
                "csrf_token": csrf_from(editor.text),
                "op": "save",
                "id": "upcoming-invoice",
                "name": "Upcoming invoice",
                "enabled": "on",
                "trigger.events.0": "invoice.upcoming",
                "trigger.mode": "any",
                "action_count": "1",
                "actions.0.type": "track_event",
                "actions.0.name": "invoice_upcoming",
            },
        )
        assert saved.status_code == 303, saved.text
        assert saved.headers["location"] == "/workflows/upcoming-invoice?saved=1"
        page = client.get(saved.headers["location"])
        warning = page.text.split('data-testid="endpoint-warning"')[1]
        assert "invoice.upcoming" in warning
        assert 'name="next" value="/workflows/upcoming-invoice"' in warning
        assert "endpoint-warning" not in client.get("/workflows/upcoming-invoice").text

        synced = client.post(
            "/stripe-endpoint/sync",
            data={"next": "/workflows/upcoming-invoice", "csrf_token": csrf_from(page.text)},
        )
        assert synced.headers["location"] == "/workflows/upcoming-invoice?endpoint=synced"
        assert "invoice.upcoming" in endpoint["enabled_events"]
        back = client.get(synced.headers["location"])
        assert 'data-testid="endpoint-synced"' in back.text


def test_api_workflow_changes_sync_the_endpoint_only_with_auto_sync(
    tmp_path: Path, fake_stripe: FakeStripe
) -> None:
    """PUT /api/workflows/{id} leaves the endpoint alone by default and syncs it with
    BILLBRIDGE_WEBHOOK_AUTO_SYNC."""
    endpoint = _endpoint(fake_stripe, list(TRIGGERS))
    data = {**REFUNDS.to_data(), "enabled": False}
    path = f"/api/workflows/{REFUNDS.id}"
    with running_dashboard(_stripe_settings(tmp_path / "off", fake_stripe)) as (url, _):
        assert httpx.put(url + path, json=data, headers=AUTH, timeout=20).status_code == 200
        assert sorted(endpoint["enabled_events"]) == TRIGGERS
    auto = _stripe_settings(tmp_path / "on", fake_stripe, BILLBRIDGE_WEBHOOK_AUTO_SYNC="true")
    with running_dashboard(auto) as (url, _):
        assert httpx.put(url + path, json=data, headers=AUTH, timeout=20).status_code == 200
        assert sorted(endpoint["enabled_events"]) == WITHOUT_REFUNDS
