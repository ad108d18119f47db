"""`setup-webhook`: create or update the Stripe webhook endpoint Billbridge needs, once.

    result = setup_webhook(lister, url="https://billing.example.com/webhooks/stripe",
                           event_types=reconcile_types(catalog), var_dir=settings.var_dir)
    result.action        # "created" or "updated"

An endpoint with the same URL is looked for first (`GET /v1/webhook_endpoints`, every
page) and updated in place: never a second endpoint for one URL. A new endpoint gets
exactly the enabled workflows' trigger types and the API version this SDK is pinned to
(Stripe renders its events with that version; it cannot be changed later). Its signing
secret is returned only by the create call: it is saved in `<var dir>/stripe-webhook-secret`
(mode 0600), which `serve` reads next to STRIPE_WEBHOOK_SECRET. Nothing here prints or
logs a secret.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import stripe

from billbridge.stripe.listing import StripeLister

SECRET_FILE = "stripe-webhook-secret"  # noqa: S105 - a file name, not a secret
MAX_SAVED_SECRETS = 4  # newest first; older endpoints' secrets keep working a while
PINNED_API_VERSION: str = str(stripe.api_version)
DESCRIPTION = "Billbridge (Stripe to Customer.io)"


@dataclass(frozen=True)
class WebhookSetupResult:
    """What `setup_webhook` did; `secret_path` is where the secret is (never the secret)."""

    action: Literal["created", "updated"]
    endpoint_id: str
    url: str
    enabled_events: tuple[str, ...]
    api_version: str | None
    status: str
    secret_path: Path | None  # None: Stripe did not return it and none is saved here
    notes: tuple[str, ...] = ()


def saved_webhook_secrets(var_dir: Path) -> tuple[str, ...]:
    """The secrets `setup-webhook` saved (newest first); empty when there are none."""
    try:
        text = (var_dir / SECRET_FILE).read_text(encoding="utf-8")
    except OSError:
        return ()
    return tuple(line.strip() for line in text.splitlines() if line.strip().startswith("whsec_"))


def save_webhook_secret(var_dir: Path, secret: str) -> Path:
    """Put `secret` first in the secrets file (mode 0600, replaced atomically)."""
    var_dir.mkdir(parents=True, exist_ok=True)
    path = var_dir / SECRET_FILE
    kept = [s for s in saved_webhook_secrets(var_dir) if s != secret]
    lines = [secret, *kept][:MAX_SAVED_SECRETS]
    temporary = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path


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
    var_dir: Path,
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
        saved = saved_webhook_secrets(var_dir)
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
            secret_path=(var_dir / SECRET_FILE) if saved else None,
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
    secret_path = save_webhook_secret(var_dir, secret) if isinstance(secret, str) else None
    if secret_path is None:
        notes.append("Stripe did not return a signing secret; copy it from the Dashboard")
    return WebhookSetupResult(
        action="created",
        endpoint_id=str(created["id"]),
        url=str(created.get("url") or url),
        enabled_events=tuple(created.get("enabled_events") or types),
        api_version=created.get("api_version"),
        status=str(created.get("status") or "enabled"),
        secret_path=secret_path,
        notes=tuple(notes),
    )
