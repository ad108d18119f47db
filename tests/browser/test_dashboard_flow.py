"""The dashboard end to end in Chromium: log in, connect, build a workflow, try it, watch
events succeed, break Customer.io, get alerted, fix it, replay — against the fakes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from billbridge.app import create_app
from billbridge.config import Settings
from billbridge.services import Services
from billbridge.stripe.samples import sample_event
from billbridge.stripe.signature import sign_payload
from tests.browser.conftest import AlertReceiver
from tests.fakes.customerio import FakeCustomerIO
from tests.fakes.stripe_api import FakeStripe
from tests.support.live_server import serve_app, wait_until

pytestmark = pytest.mark.slow

SECRET = "whsec_browser_flow"
PASSWORD = "correct horse battery staple"
TIMEOUT = 20_000  # milliseconds, for Playwright's own waits
LAPTOP = {"width": 1280, "height": 900}
expect.set_options(timeout=TIMEOUT)
PHONE = {"width": 390, "height": 844}


@dataclass
class Dashboard:
    url: str
    services: Services
    cio: FakeCustomerIO
    stripe: FakeStripe

    def post_event(self, event: dict[str, Any]) -> str:
        """Deliver a signed webhook as Stripe would; returns the event id."""
        body = json.dumps(event).encode()
        response = httpx.post(
            self.url + "/webhooks/stripe",
            content=body,
            headers={
                "Content-Type": "application/json",
                "Stripe-Signature": sign_payload(body, SECRET),
            },
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return str(event["id"])


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[Dashboard]:
    """Billbridge with the worker, the alert loop, the fake Customer.io (its URL only: the
    credentials are entered in the browser) and the fake Stripe API."""
    with FakeCustomerIO(app_rate_limit=None) as cio, FakeStripe() as stripe:
        settings = Settings(
            DATABASE_URL=f"sqlite:///{tmp_path}/dashboard.db",
            STRIPE_WEBHOOK_SECRET=SECRET,
            STRIPE_API_KEY=stripe.api_key,
            STRIPE_API_BASE=stripe.base_url,
            CUSTOMERIO_TRACK_URL=cio.url,
            CUSTOMERIO_APP_URL=cio.url,
            BILLBRIDGE_VAR_DIR=str(tmp_path),
            BILLBRIDGE_ADMIN_PASSWORD=PASSWORD,
            BILLBRIDGE_RETRY_SCHEDULE="0.2",
            BILLBRIDGE_ALERTS_ALLOW_LOOPBACK="1",
            BILLBRIDGE_ALERTS_CHECK_INTERVAL="0.3",
        )
        app = create_app(settings, run_worker=True)
        with serve_app(app) as url:
            yield Dashboard(url, app.state.services, cio, stripe)


def log_in(page: Page, url: str) -> None:
    page.goto(url + "/")
    expect(page).to_have_url(re.compile(r"/login"))  # pages need a session
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()


def wait_for_status(page: Page, event_url: str, status: str) -> None:
    """Reload the event page until its status badge says `status` (deadline 20 s)."""

    def shown() -> bool:
        page.goto(event_url)
        return page.get_by_test_id("event-status").inner_text().strip() == status

    wait_until(shown, timeout=20, interval=0.3)


def test_dashboard_flow(
    browser: Browser, dashboard: Dashboard, alert_receiver: AlertReceiver
) -> None:
    """Log in, connect Customer.io, create a workflow from a template with a mapped field,
    try it, receive webhooks, fail and alert, fix, replay one and all, see them succeed."""
    context = browser.new_context(viewport=LAPTOP)  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # the data-confirm prompts
    url, cio = dashboard.url, dashboard.cio

    # 1. Log in (the admin comes from BILLBRIDGE_ADMIN_PASSWORD).
    log_in(page, url)
    expect(page.get_by_text("Customer.io is not connected")).to_be_visible()

    # 2. Connect Customer.io in Settings → Connections (4a's page) and test the connection.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Connections").click()
    config = cio.config
    page.locator("#customerio-site_id").fill(config.site_id)
    page.locator("#customerio-track_api_key").fill(config.track_api_key)
    page.locator("#customerio-app_api_key").fill(config.app_api_key)
    page.get_by_role("button", name="Save Customer.io", exact=True).click()
    expect(page.get_by_text("Saved (encrypted).")).to_be_visible()
    assert config.track_api_key not in page.content()  # never shown back in full
    customerio = page.locator(
        "section", has=page.get_by_role("heading", name="Customer.io", exact=True)
    )
    customerio.get_by_role("button", name="Test connection").click()
    expect(page.get_by_text(re.compile("Customer.io connection works"))).to_be_visible()

    # 3. Workflows: switch the default "Payment failed" off, then create one from its template.
    page.get_by_role("link", name="Workflows", exact=True).click()
    default_switch = page.get_by_test_id("toggle-payment-failed")
    expect(default_switch).to_have_attribute("aria-checked", "true")
    default_switch.click()
    expect(page.get_by_test_id("toggle-payment-failed")).to_have_attribute("aria-checked", "false")
    assert dashboard.services.catalog.get("payment-failed").enabled is False  # type: ignore[union-attr]
    page.get_by_role("link", name="New workflow").click()
    page.get_by_role("link", name="Use the template Payment failed").click()
    expect(page.get_by_role("textbox", name="ID")).to_have_value("payment-failed-2")
    page.locator("#f-name").fill("Payment failed (from the dashboard)")
    expect(page.locator("#f-trigger-events-0")).to_have_value("charge.failed")

    # 4. Map a field: the editor offers the fields of a real charge.failed sample.
    options = page.locator("#sample-fields option")
    assert "{{ object.amount }}" in options.evaluate_all("els => els.map(e => e.value)")
    data = page.get_by_test_id("action-0").locator("fieldset", has_text="Data")
    data.get_by_label("Data: name (new row)").fill("amount_due_cents")
    data.get_by_label("Data: value (new row)").fill("{{ object.amount }}")

    # A validation error is shown at its field: a segment action without a segment id.
    added = page.locator("fieldset.action-card").count()
    page.get_by_label("Add an action").select_option("add_to_segment")
    page.get_by_role("button", name="Add action").click()
    page.get_by_test_id("save-workflow").click()
    segment = page.locator(f"#f-actions-{added}-segment_id")
    expect(segment).to_have_attribute("aria-invalid", "true")
    error = page.locator(f"#f-actions-{added}-segment_id-error")
    expect(error).to_have_text(re.compile("required"))
    expect(page.get_by_test_id("error-summary")).to_contain_text(f"actions.{added}.segment_id")
    page.get_by_test_id(f"action-{added}").get_by_role("button", name="Remove this action").click()
    page.get_by_test_id("save-workflow").click()
    expect(page.get_by_text("Saved.")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/workflows/payment-failed-2\?saved=1"))
    saved = dashboard.services.catalog.get("payment-failed-2")
    assert saved is not None
    assert saved.actions[0].data["amount_due_cents"] == "{{ object.amount }}"  # type: ignore[union-attr]

    # 5. Try it: the exact request for a sample, then send it for real.
    page.get_by_role("link", name="Try it").click()
    page.get_by_test_id("dry-run").click()
    planned = page.get_by_test_id("planned-request").first
    expect(planned).to_contain_text("POST /api/v1/customers/")
    expect(planned).to_contain_text('"amount_due_cents": 2900')
    assert not [r for r in cio.requests if "/events" in r["path"]]  # a dry run sends nothing
    page.get_by_label("I want to send these requests to Customer.io").check()
    page.get_by_test_id("send-for-real").click()
    expect(page.get_by_test_id("send-results")).to_contain_text("HTTP 200")
    cio.wait_for(lambda: [e for e in cio.events if e.get("name") == "payment_failed"])

    # 6. A signed webhook arrives; the event page shows it succeed.
    ok_id = dashboard.post_event(
        sample_event("charge.failed", livemode=True, customer_id="cus_BrowserOk01")
    )
    page.get_by_role("link", name="Events", exact=True).click()
    page.get_by_label("Customer ID").fill("cus_BrowserOk01")
    page.get_by_role("button", name="Search", exact=True).click()
    page.get_by_role("link", name=ok_id).click()
    wait_for_status(page, page.url, "succeeded")
    expect(page.get_by_test_id("delivery").first).to_contain_text(
        "Payment failed (from the dashboard)"
    )
    tracked = page.get_by_test_id("delivery").filter(has_text="Track event")
    tracked.get_by_text("Request and response").click()
    expect(tracked).to_contain_text('"amount_due_cents": 2900')
    assert cio.config.track_api_key not in page.content()  # no secret in the timeline

    # 7. Alerts (4a's page): a generic webhook to a local receiver, on permanent failures.
    page.get_by_role("link", name="Alerts").click()
    page.get_by_label("Generic webhook").fill(alert_receiver.url)
    page.get_by_label("A delivery fails permanently").check()
    page.get_by_label("At most one message every (minutes)").fill("0")
    page.get_by_role("button", name="Save alert settings").click()
    expect(page.get_by_text("Alert settings saved.")).to_be_visible()

    # 8. Break Customer.io: every event call is refused with a 400; two events fail.
    cio.fail_next(
        400, count=None, method="POST", path_prefix="/api/v1/customers", body={"meta": {}}
    )
    # Deliveries ready together go out as a Track v2 batch: refuse those too (Billbridge
    # then sends each delivery on its own, which meets the 400 above).
    cio.fail_next(400, count=None, path_prefix="/api/v2/batch", body={"errors": []})
    failed_ids = [
        dashboard.post_event(
            sample_event("charge.failed", livemode=True, customer_id=f"cus_BrowserBad0{n}")
        )
        for n in (1, 2)
    ]
    event_url = f"{url}/events/{failed_ids[0]}"
    wait_for_status(page, event_url, "failed")
    expect(page.get_by_test_id("delivery").filter(has_text="Track event")).to_contain_text("400")
    wait_for_status(page, f"{url}/events/{failed_ids[1]}", "failed")
    alert = wait_until(
        lambda: [m for m in alert_receiver.messages() if m.get("failed")], timeout=20
    )
    assert alert[0]["source"] == "billbridge"
    page.goto(url + "/")
    expect(page.get_by_test_id("failing")).to_contain_text("2 failed")
    expect(page.get_by_test_id("volume-chart")).to_be_visible()

    # 9. Fix it, replay the first event from its page, then all failed ones by a search.
    cio.clear_faults()
    page.goto(event_url)
    page.get_by_role("button", name="Replay", exact=True).click()
    expect(page.get_by_text(re.compile(r"Replaying \d+ deliver(y|ies) now"))).to_be_visible()
    wait_for_status(page, event_url, "succeeded")
    page.goto(url + "/events?type=charge.failed&status=failed")
    expect(page.get_by_test_id("events-table")).to_contain_text(failed_ids[1])
    page.get_by_role("button", name="Replay all failed matching this search").click()
    expect(page.get_by_text(re.compile(r"Replaying 1 failed delivery now"))).to_be_visible()
    wait_for_status(page, f"{url}/events/{failed_ids[1]}", "succeeded")
    cio.wait_for(
        lambda: all(
            any(customer in json.dumps(event) for event in cio.events)
            for customer in ("cus_BrowserBad01", "cus_BrowserBad02")
        )
    )

    # 10. Log out: the dashboard asks for a login again.
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login"))
    page.goto(url + "/events")
    expect(page).to_have_url(re.compile(r"/login\?next=/events"))
    context.close()


def test_dashboard_on_a_phone_and_by_keyboard(browser: Browser, dashboard: Dashboard) -> None:
    """On a phone-size screen the menu opens and every page fits the width; the skip link is
    the first Tab stop and moves focus to the main content."""
    context = browser.new_context(viewport=PHONE)  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT)
    page = context.new_page()
    dashboard.post_event(sample_event("customer.created", customer_id="cus_Phone0001"))
    log_in(page, dashboard.url)
    nav = page.get_by_role("navigation", name="Main")
    expect(nav).to_be_hidden()
    menu = page.get_by_role("button", name="Menu")
    menu.click()
    expect(menu).to_have_attribute("aria-expanded", "true")
    nav.get_by_role("link", name="Events").click()
    expect(page.get_by_role("heading", name="Events", level=1)).to_be_visible()
    for path in ("/", "/events", "/workflows", "/workflows/customer-created", "/workflows/new"):
        page.goto(dashboard.url + path)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} is wider than the phone screen by {overflow}px"

    page.goto(dashboard.url + "/workflows")
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    context.close()
