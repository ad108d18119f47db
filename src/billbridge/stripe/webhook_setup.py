"""`setup-webhook`: create or update the Stripe webhook endpoint Billbridge needs, once.

    result = setup_webhook(lister, url="https://billing.example.com/webhooks/stripe",
                           event_types=reconcile_types(catalog),
                           secrets=SavedWebhookSecrets(store, box, settings.var_dir))
    result.action        # "created" or "updated"

An endpoint with the same URL is looked for first (`GET /v1/webhook_endpoints`, every
page) and updated in place: never a second endpoint for one URL. A new endpoint gets
exactly the enabled workflows' trigger types and the API version this SDK is pinned to
(Stripe renders its events with that version; it cannot be changed later). Its signing
secret is returned only by the create call: it is saved in the database, encrypted with the
secret box (`SavedWebhookSecrets`), and every `serve` reads it next to STRIPE_WEBHOOK_SECRET.
Nothing here prints or logs a secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import stripe

from billbridge.secret_box import SecretBox
from billbridge.store.base import Store
from billbridge.stripe.listing import StripeLister

SECRET_FILE = "stripe-webhook-secret"  # noqa: S105 - older versions' file, read to upgrade
CREDENTIAL_NAME = "stripe_webhook"  # the credentials row holding the saved secrets
MAX_SAVED_SECRETS = 4  # newest first; older endpoints' secrets keep working a while
PINNED_API_VERSION: str = str(stripe.api_version)
DESCRIPTION = "Billbridge (Stripe to Customer.io)"


@dataclass(frozen=True)
class WebhookSetupResult:
    """What `setup_webhook` did; `secret_saved` says a signing secret is saved (never which)."""

    action: Literal["created", "updated"]
    endpoint_id: str
    url: str
    enabled_events: tuple[str, ...]
    api_version: str | None
    status: str
    secret_saved: bool  # False: Stripe did not return it and none was saved before
    notes: tuple[str, ...] = ()


class SavedWebhookSecrets:
    """The signing secrets `setup-webhook` saved: in the database (credentials row
    `stripe_webhook`, encrypted with the secret box), newest first, so every `serve` of a
    fleet reads them. A `<var dir>/stripe-webhook-secret` file from an older version is
    still read, and its secrets are stored in the database."""

    def __init__(self, store: Store, box: SecretBox, var_dir: Path) -> None:
        self._store = store
        self._box = box
        self._var_dir = var_dir

    def read(self) -> tuple[str, ...]:
        """The saved secrets (newest first); empty when there are none."""
        token = self._store.get_credentials().get(CREDENTIAL_NAME)
        stored = _secrets_of(self._box.decrypt_json(token)) if token else ()
        upgraded = [s for s in _file_secrets(self._var_dir) if s not in stored]
        if not upgraded:
            return stored
        merged = (*stored, *upgraded)[:MAX_SAVED_SECRETS]
        self._write(merged)
        return merged

    def count(self) -> int:
        """How many secrets are saved (the database's and an older file's), changing
        nothing: for `doctor`."""
        token = self._store.get_credentials().get(CREDENTIAL_NAME)
        stored = _secrets_of(self._box.decrypt_json(token)) if token else ()
        return len({*stored, *_file_secrets(self._var_dir)})

    def save(self, secret: str) -> None:
        """Put `secret` first (older ones are kept, up to MAX_SAVED_SECRETS)."""
        kept = [s for s in self.read() if s != secret]
        self._write((secret, *kept)[:MAX_SAVED_SECRETS])

    def _write(self, secrets: tuple[str, ...]) -> None:
        self._store.save_credential(CREDENTIAL_NAME, self._box.encrypt_json({"secrets": secrets}))


def _secrets_of(document: dict[str, Any]) -> tuple[str, ...]:
    values = document.get("secrets")
    if not isinstance(values, list):
        return ()
    return tuple(v for v in values if isinstance(v, str) and v.startswith("whsec_"))


def _file_secrets(var_dir: Path) -> tuple[str, ...]:
    """The secrets file an older `setup-webhook` wrote in the var dir (upgrade path)."""
    try:
        text = (var_dir / SECRET_FILE).read_text(encoding="utf-8")
    except OSError:
        return ()
    return tuple(line.strip() for line in text.splitlines() if line.strip().startswith("whsec_"))


def _find_endpoints(lister: StripeLister, url: str) -> list[dict[str, Any]]:
    wanted = url.rstrip("/")
    return [
        endpoint
        for endpoint in lister.iterate("webhook_endpoints")
        if str(endpoint.get("url") or "").rstrip("/") == wanted
    ]


def setup_webhook(
    lister: StripeLister,
    *,
    url: str,
    event_types: list[str],
    secrets: SavedWebhookSecrets,
    api_version: str = PINNED_API_VERSION,
) -> WebhookSetupResult:
    """Create the endpoint for `url`, or update the one that exists. Raises StripeAPIError."""
    if not event_types:
        raise ValueError("no enabled workflow triggers on any event: nothing to subscribe to")
    types = sorted(set(event_types))
    service = lister.client.v1.webhook_endpoints
    existing = _find_endpoints(lister, url)
    notes: list[str] = []
    if existing:
        endpoint = existing[0]
        endpoint_id = str(endpoint["id"])
        params: dict[str, Any] = {"enabled_events": types}
        if endpoint.get("status") == "disabled":
            params["disabled"] = False
            notes.append("the endpoint was disabled; it is enabled again")
        updated = lister.call(
            "update a webhook endpoint", lambda: service.update(endpoint_id, params)
        )
        if len(existing) > 1:
            others = ", ".join(str(e["id"]) for e in existing[1:])
            notes.append(f"other endpoints with this URL exist ({others}); delete them in Stripe")
        current_version = updated.get("api_version")
        if current_version and current_version != api_version:
            notes.append(
                f"its api_version is {current_version}, not {api_version} (Stripe cannot "
                "change it): delete the endpoint and run this again to re-create it"
            )
        saved = bool(secrets.read())
        if not saved:
            notes.append(
                "Stripe returns the signing secret only at creation: copy it from the "
                "Dashboard into STRIPE_WEBHOOK_SECRET"
            )
        return WebhookSetupResult(
            action="updated",
            endpoint_id=endpoint_id,
            url=str(updated.get("url") or url),
            enabled_events=tuple(updated.get("enabled_events") or types),
            api_version=current_version,
            status=str(updated.get("status") or "enabled"),
            secret_saved=saved,
            notes=tuple(notes),
        )
    create_params: dict[str, Any] = {
        "url": url,
        "enabled_events": types,
        "api_version": api_version,
        "description": DESCRIPTION,
        "metadata": {"created_by": "billbridge"},
    }
    created = lister.call("create a webhook endpoint", lambda: service.create(create_params))
    secret = created.get("secret")
    secret_saved = isinstance(secret, str)
    if isinstance(secret, str):
        secrets.save(secret)
    else:
        notes.append("Stripe did not return a signing secret; copy it from the Dashboard")
    return WebhookSetupResult(
        action="created",
        endpoint_id=str(created["id"]),
        url=str(created.get("url") or url),
        enabled_events=tuple(created.get("enabled_events") or types),
        api_version=created.get("api_version"),
        status=str(created.get("status") or "enabled"),
        secret_saved=secret_saved,
        notes=tuple(notes),
    )
