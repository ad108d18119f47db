"""The Stripe webhook endpoint on the dashboard: its warning's context and the Sync button.

    POST /stripe-endpoint/sync    (CSRF) enabled_events := the enabled workflows' triggers,
                                  then back to `next` with ?endpoint=synced or =failed

Pages that show the endpoint's state add `await endpoint_context(request, next_path)` to
their template context; base.html renders `_endpoint_notice.html` from it. The check comes
from `Services.stripe_endpoint` (cached for a few minutes: each check is a Stripe call).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import anyio
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from billbridge.errors import ConfigurationError, StripeAPIError
from billbridge.web.pages_common import CSRF, CurrentUser, read_form, run_store, services_of

log = structlog.get_logger(__name__)


def safe_next(value: str | None) -> str:
    """A path on this site to return to ("/" for anything else: no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return parts.path or "/"


async def endpoint_context(request: Request, next_path: str) -> dict[str, Any]:
    """`endpoint`, `endpoint_synced`, `endpoint_failed`, `endpoint_next` for a page."""
    check = await run_store(services_of(request).stripe_endpoint.status)
    outcome = request.query_params.get("endpoint")
    return {
        "endpoint": check,
        "endpoint_synced": outcome == "synced" and check.state == "in_sync",
        "endpoint_failed": outcome == "failed",
        "endpoint_next": next_path,
    }


async def workflows_changed(request: Request) -> bool:
    """After a workflow was saved, toggled or deleted: check the endpoint again (and sync
    it when BILLBRIDGE_WEBHOOK_AUTO_SYNC is on); True when it was synced."""
    watch = services_of(request).stripe_endpoint
    check, synced = await anyio.to_thread.run_sync(watch.after_workflows_changed)
    if synced:
        log.info("webhook endpoint synced after a workflow change", endpoint_id=check.endpoint_id)
    return synced


def build_endpoint_router() -> APIRouter:
    """`POST /stripe-endpoint/sync`."""
    router = APIRouter(include_in_schema=False)

    @router.post("/stripe-endpoint/sync", dependencies=CSRF)
    async def sync(request: Request, user: CurrentUser) -> Response:
        form = await read_form(request)
        back = safe_next(form.get("next"))
        watch = services_of(request).stripe_endpoint
        try:
            result = await run_store(watch.sync)
        except (ConfigurationError, StripeAPIError) as exc:
            log.warning("webhook endpoint sync failed", error=str(exc), user=user.username)
            return RedirectResponse(f"{back}?endpoint=failed", status_code=303)
        log.info(
            "webhook endpoint sync requested",
            endpoint_id=result.after.endpoint_id,
            changed=result.changed,
            user=user.username,
        )
        return RedirectResponse(f"{back}?endpoint=synced", status_code=303)

    return router
