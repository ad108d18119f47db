"""The Overview page: volume and success rate per hour, the queue, the workers alive,
failures, last event, and whether the Stripe webhook endpoint receives what the workflows
need."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from billbridge.delivery.worker import KNOWN_WITHIN, SILENT_AFTER, split_workers
from billbridge.store.records import EventFilter
from billbridge.web.chart import volume_chart
from billbridge.web.pages_common import CurrentUser, render, run_store, services_of
from billbridge.web.pages_endpoint import endpoint_context

CHART_HOURS = 24
STRIPE_SILENT_AFTER = 24 * 3600.0  # seconds without an event before the overview warns
STALLED_AFTER = 300.0  # seconds a due delivery may wait before the queue counts as stalled


def build_overview_router() -> APIRouter:
    """`GET /`: the overview."""
    router = APIRouter(include_in_schema=False)

    @router.get("/", response_class=HTMLResponse)
    async def overview(request: Request, user: CurrentUser) -> HTMLResponse:
        services = services_of(request)
        store = services.store
        stats = await run_store(store.stats)
        volume = await run_store(lambda: store.hourly_volume(CHART_HOURS))
        failed_events, _ = await run_store(
            lambda: store.list_events(EventFilter(status="failed"), limit=5)
        )
        retrying_events, _ = await run_store(
            lambda: store.list_events(EventFilter(status="retrying"), limit=5)
        )
        alive, silent_workers = split_workers(
            await run_store(lambda: store.list_workers(KNOWN_WITHIN))
        )
        last = stats.last_event_received_at
        silent_for = None if last is None else max(0.0, time.time() - last)
        return render(
            request,
            "overview.html",
            user,
            active="overview",
            stats=stats,
            chart=volume_chart(volume),
            hours=CHART_HOURS,
            failing_events=[*failed_events, *retrying_events][:8],
            failed_total=stats.deliveries_by_status.get("failed", 0),
            retrying_now=stats.deliveries_by_status.get("retrying", 0),
            silent=last is None or (silent_for is not None and silent_for > STRIPE_SILENT_AFTER),
            silent_for=silent_for,
            stalled=stats.oldest_pending_age > STALLED_AFTER,
            dry_run=services.cio.dry_run,
            workers=alive,
            silent_workers=silent_workers,
            worker_silent_after=SILENT_AFTER,
            **(await endpoint_context(request, "/")),
        )

    return router
