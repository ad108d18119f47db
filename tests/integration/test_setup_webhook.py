"""`billbridge setup-webhook`: one endpoint per URL, exactly the needed events, secret kept safe."""

from __future__ import annotations

from pathlib import Path

import pytest

from billbridge.composition import webhook_secrets_for
from billbridge.secret_box import SecretBox
from billbridge.store import open_store
from billbridge.stripe.webhook_setup import CREDENTIAL_NAME, SECRET_FILE
from billbridge.workflows.defaults import default_workflows
from tests.fakes import stripe_api as stripe_fakes
from tests.fakes.stripe_api import FakeStripe
from tests.support.stripe_jobs import invoke, use_env

fake_stripe = stripe_fakes.fake_stripe
fake_stripe_server = stripe_fakes.fake_stripe_server

URL = "https://billing.example.com/webhooks/stripe"
TRIGGERS = sorted({t for w in default_workflows() if w.enabled for t in w.trigger.events})


def test_creates_once_then_updates_without_duplicating_and_never_prints_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_stripe: FakeStripe
) -> None:
    """First run creates the endpoint (pinned api_version, the enabled workflows' trigger
    types) and saves its secret in the database, encrypted; the second run updates the
    same endpoint."""
    settings = use_env(monkeypatch, tmp_path, fake_stripe)
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET")
    first = invoke("setup-webhook", "--url", URL)
    assert first.exit_code == 0, first.output
    assert first.output.startswith("Created webhook endpoint we_")
    (endpoint,) = fake_stripe.webhook_endpoints.values()
    assert endpoint["url"] == URL
    assert sorted(endpoint["enabled_events"]) == TRIGGERS
    import stripe  # noqa: PLC0415

    assert endpoint["api_version"] == stripe.api_version
    assert not (tmp_path / "var" / SECRET_FILE).exists()
    store = open_store(settings.database_url)
    try:
        ciphertext = store.get_credentials()[CREDENTIAL_NAME]
        assert endpoint["secret"] not in ciphertext
        box = SecretBox.from_settings(settings)
        assert box.decrypt_json(ciphertext) == {"secrets": [endpoint["secret"]]}
    finally:
        store.close()
    assert endpoint["secret"] not in first.output
    assert "saved in the database (encrypted)" in first.output

    endpoint["enabled_events"] = ["charge.failed"]  # drifted: someone edited it by hand
    second = invoke("setup-webhook", "--url", URL)
    assert second.exit_code == 0, second.output
    assert second.output.startswith(f"Updated webhook endpoint {endpoint['id']}")
    assert len(fake_stripe.webhook_endpoints) == 1
    assert sorted(endpoint["enabled_events"]) == TRIGGERS
    assert endpoint["secret"] not in second.output
    assert len(fake_stripe.requests_to("/v1/webhook_endpoints", "POST")) == 1

    no_env_secret = settings.model_copy(update={"stripe_webhook_secret": ()})
    store = open_store(settings.database_url)
    try:
        assert webhook_secrets_for(no_env_secret, store, dev=False) == (endpoint["secret"],)
    finally:
        store.close()


def test_an_existing_endpoint_made_elsewhere_is_updated_and_the_missing_secret_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_stripe: FakeStripe
) -> None:
    """An endpoint with the URL that Billbridge did not create is reused, not duplicated;
    the output says the secret must come from the Dashboard."""
    use_env(monkeypatch, tmp_path, fake_stripe)
    fake_stripe.webhook_endpoints["we_handmade"] = {
        "id": "we_handmade",
        "object": "webhook_endpoint",
        "api_version": "2024-06-20",
        "enabled_events": ["*"],
        "secret": "whsec_handmade_never_shown",
        "status": "disabled",
        "url": URL,
        "created": 1,
    }
    result = invoke("setup-webhook", "--url", URL)
    assert result.exit_code == 0, result.output
    assert "Updated webhook endpoint we_handmade" in result.output
    assert "Dashboard" in result.output
    assert "api_version is 2024-06-20" in result.output
    assert fake_stripe.webhook_endpoints["we_handmade"]["status"] == "enabled"
    assert sorted(fake_stripe.webhook_endpoints["we_handmade"]["enabled_events"]) == TRIGGERS
    assert "whsec_" not in result.output
    store = open_store(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        assert CREDENTIAL_NAME not in store.get_credentials()
    finally:
        store.close()
