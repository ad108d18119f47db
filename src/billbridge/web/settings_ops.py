"""What the connections, alerts and tokens settings do, shared by the JSON API and the pages.

    await test_connection(services, "customerio")   # {"ok": True, "detail": ..., "region": "eu"}
    view = await alerts_view(services)               # URLs masked: they are secrets

Nothing returned here holds a whole credential or webhook URL.
"""

from __future__ import annotations

from functools import partial
from typing import Any
from urllib.parse import urlsplit

import anyio
from fastapi import Request
from pydantic import ValidationError

from billbridge.alerts.config import (
    AlertConfig,
    AlertURLError,
    check_alert_url,
    own_endpoints,
)
from billbridge.alerts.monitor import AlertMonitor, load_alert_config, save_alert_config
from billbridge.config import CioMode
from billbridge.credentials import CONNECTIONS, ConnectionName
from billbridge.errors import DeliveryError, StripeAPIError
from billbridge.secret_box import SecretBox
from billbridge.services import Services

URL_FIELDS = ("slack_url", "webhook_url")


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def connection_name(name: str) -> ConnectionName | None:
    for known in CONNECTIONS:
        if known == name:
            return known
    return None


async def connections_view(services: Services) -> dict[str, Any]:
    """Each connection's fields (masked, with their source) and whether sends are dry runs."""
    described = await anyio.to_thread.run_sync(services.credentials.describe)
    effective = services.cio.settings
    return {
        "connections": described,
        "dry_run": effective.dry_run,
        # Where Stripe test-mode events go: test (the test workspace), live, dry_run, ignore.
        "test_mode_events": effective.test_mode_route,
    }


async def test_connection(services: Services, name: ConnectionName) -> dict[str, Any]:
    """Customer.io: GET /api/v1/accounts/region (a detected region is saved unless the
    environment sets it). Stripe: one cheap read. Never raises for a failed check."""
    await anyio.to_thread.run_sync(services.credentials.refresh)
    if name in ("customerio", "customerio_test"):
        return await _test_customerio(services, name)
    api = await anyio.to_thread.run_sync(services.credentials.stripe_api)
    if api is None:
        return {"ok": False, "detail": "enter a Stripe secret or restricted key first"}
    try:
        detail = await anyio.to_thread.run_sync(api.check)
    except StripeAPIError as exc:
        return {"ok": False, "detail": str(exc)}
    return {"ok": True, "detail": detail}


async def _test_customerio(services: Services, name: ConnectionName) -> dict[str, Any]:
    """GET /api/v1/accounts/region with the live (`customerio`) or the test workspace's
    (`customerio_test`) Track credentials; a detected region is saved."""
    mode: CioMode = "test" if name == "customerio_test" else "live"
    effective = services.credentials.current()
    configured = effective.has_test_workspace if mode == "test" else not effective.dry_run
    if not configured:
        return {"ok": False, "detail": "enter the Site ID and the Track API key first"}
    try:
        found = await services.cio.check_region(mode=mode)
    except DeliveryError as exc:
        return {"ok": False, "detail": str(exc)}
    region = found.get("region")
    which = "test workspace " if mode == "test" else ""
    detail = f"Customer.io accepted the {which}Track API credentials"
    if region in ("us", "eu"):
        detail += f"; the workspace is in region {region.upper()}"
        current = effective.customerio_region
        if mode == "test":
            current = effective.customerio_test_region or current
        described = await anyio.to_thread.run_sync(services.credentials.describe)
        if region != current and described[name]["region"]["source"] != "env":
            await anyio.to_thread.run_sync(
                lambda: services.credentials.save(name, {"region": region})
            )
            detail += " (saved)"
    return {"ok": True, "detail": detail, "region": region}


# Alerts ---------------------------------------------------------------------------------


def mask_url(url: str | None) -> str | None:
    """`https://hooks.slack.com/…`: scheme and host only; the path is the secret."""
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…"


def alerts_public(config: AlertConfig) -> dict[str, Any]:
    data = config.model_dump()
    for name in URL_FIELDS:
        data[name] = mask_url(data[name])
        data[f"{name}_set"] = bool(getattr(config, name))
    return data


async def alerts_view(services: Services) -> dict[str, Any]:
    box = SecretBox.from_settings(services.settings)
    config = await anyio.to_thread.run_sync(lambda: load_alert_config(services, box))
    return alerts_public(config)


def _own(request: Request, services: Services) -> list[tuple[str, int]]:
    return own_endpoints(services.settings.public_url, [str(request.base_url)])


async def update_alerts(
    request: Request, services: Services, changes: dict[str, Any]
) -> tuple[AlertConfig | None, dict[str, str]]:
    """Apply `changes` to the saved alert settings: a URL field that is missing or None
    keeps the saved URL, "" removes it, a new one is checked. Returns (saved, problems)."""
    box = SecretBox.from_settings(services.settings)
    current = await anyio.to_thread.run_sync(lambda: load_alert_config(services, box))
    data = current.model_dump()
    problems: dict[str, str] = {}
    for name, value in changes.items():
        if name not in data:
            problems[name] = "unknown setting"
        elif name in URL_FIELDS and value is None:
            continue
        else:
            data[name] = value
    email = data.get("email")
    if isinstance(email, dict) and not any(str(v or "").strip() for v in email.values()):
        data["email"] = None
    if problems:
        return None, problems
    try:
        config = AlertConfig.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            problems[".".join(str(p) for p in error["loc"]) or "alerts"] = error["msg"]
        return None, problems or {"alerts": "invalid settings"}
    own = _own(request, services)
    allow = services.settings.alerts_allow_loopback
    for name, url in config.urls().items():
        if url == getattr(current, name):
            continue  # unchanged: it was checked when saved (and is checked at each send)
        try:
            await anyio.to_thread.run_sync(
                partial(check_alert_url, url, allow_loopback=allow, own=own)
            )
        except AlertURLError as exc:
            problems[name] = str(exc)
    if problems:
        return None, problems
    await anyio.to_thread.run_sync(lambda: save_alert_config(services, box, config))
    return config, {}


async def send_test_alert(services: Services) -> dict[str, Any]:
    """Send the test message through the saved channels; one result per channel."""
    box = SecretBox.from_settings(services.settings)
    config = await anyio.to_thread.run_sync(lambda: load_alert_config(services, box))
    if not config.has_channels:
        return {"ok": False, "results": [], "detail": "no alert channel is configured"}
    results = await AlertMonitor(services).send_test(config)
    return {
        "ok": all(result.ok for result in results),
        "results": [
            {"channel": result.channel, "ok": result.ok, "detail": result.detail}
            for result in results
        ],
    }
