"""Reconcile: list Stripe's Events API and push every event the store lacks through ingest.

    reconciler = Reconciler(store=..., catalog=..., ingest=..., lister=..., metrics=...)
    report = reconciler.run(since=7200)        # or None: from the stored cursor
    report.recovered                           # events that had never arrived as webhooks

What is listed: the event types the enabled workflows trigger on (`types[]`, at most 20 per
request, so several requests when more are enabled), created after a window start:

    explicit `since` (seconds)       now - since
    else the stored cursor           cursor - OVERLAP (600 s: events can appear late)
    else (first run)                 now - DEFAULT_LOOKBACK (72 h, Stripe's retry window)

clamped to Stripe's 30-day retention. Each listed event goes through
`IngestService.store_event(event, raw, "reconcile")`, the webhook's own insert path: an
event the store already holds is a duplicate and changes nothing, a missing one gets its
deliveries like a webhook would. After a complete run the cursor (meta key
`reconcile.cursor`) moves to the newest `created` seen; a failed run leaves it alone, so
the next run covers the same window again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio
import structlog

from billbridge.errors import BillbridgeError
from billbridge.ingest import IngestService
from billbridge.observability import Metrics
from billbridge.store.base import Store
from billbridge.stripe.endpoint_sync import needed_types
from billbridge.stripe.events import check_event_bounds
from billbridge.stripe.listing import StripeLister
from billbridge.workflows.catalog import WorkflowCatalog
from billbridge.workflows.late_events import LATE_AFTER

CURSOR_KEY = "reconcile.cursor"
OVERLAP = 600  # seconds re-listed before the cursor
DEFAULT_LOOKBACK = 3 * 86_400  # seconds: a first run covers Stripe's own 3-day retries
RETENTION = 30 * 86_400 - 300  # seconds: the Events API keeps 30 days (margin for clocks)
MAX_TYPES_PER_REQUEST = 20  # Stripe's limit on `types[]`

log = structlog.get_logger("billbridge.reconcile")


@dataclass(frozen=True)
class ReconcileReport:
    """What one reconcile run did."""

    since: int  # created[gt] used (Unix seconds)
    types: tuple[str, ...]
    listed: int  # events the Events API returned
    recovered: int  # of them, events the store did not have
    requests: int  # Stripe API requests made
    cursor: int  # the stored cursor after the run
    seconds: float  # wall time
    stopped: bool = False  # interrupted by shutdown (the cursor was not moved)
    # Of the recovered events, those created more than 72 h before this run: their event
    # deliveries follow each workflow's late_events policy (workflows/late_events.py).
    late: int = 0


def reconcile_types(catalog: WorkflowCatalog) -> list[str]:
    """The Stripe event types the enabled workflows trigger on, sorted."""
    return needed_types(catalog.all())


def chunked(items: Sequence[str], size: int = MAX_TYPES_PER_REQUEST) -> list[list[str]]:
    """`items` in consecutive groups of at most `size`."""
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


class Reconciler:
    """Lists missed events and stores them through the ingest path. Synchronous (blocking)."""

    def __init__(
        self,
        *,
        store: Store,
        catalog: WorkflowCatalog,
        ingest: IngestService,
        lister: StripeLister,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._ingest = ingest
        self._lister = lister
        self._metrics = metrics
        self._clock = clock

    def cursor(self) -> int | None:
        """The newest `created` a complete run has seen, or None before the first run."""
        raw = self._store.get_meta(CURSOR_KEY)
        try:
            return int(raw) if raw is not None else None
        except ValueError:
            return None

    def window_start(self, since: float | None) -> int:
        """`created[gt]` for a run (see the module docstring)."""
        now = int(self._clock())
        cursor = self.cursor()
        if since is not None:
            start = now - int(since)
        elif cursor is not None:
            start = cursor - OVERLAP
        else:
            start = now - DEFAULT_LOOKBACK
        return max(start, now - RETENTION)

    def run(
        self, since: float | None = None, *, should_stop: Callable[[], bool] | None = None
    ) -> ReconcileReport:
        """List and store. Raises `StripeAPIError` or `StoreUnavailableError` on failure."""
        started = time.perf_counter()
        requests_before = self._lister.requests
        start = self.window_start(since)
        types = reconcile_types(self._catalog)
        listed = recovered = late = 0
        late_before = self._clock() - LATE_AFTER
        newest = start
        stopped = False
        for group in chunked(types):
            params = {"types": group, "created": {"gt": start}}
            for event in self._lister.iterate("events", params, should_stop=should_stop):
                listed += 1
                created = event.get("created")
                if isinstance(created, int):
                    newest = max(newest, created)
                try:
                    check_event_bounds(event)  # what a webhook of it would be refused for
                except ValueError as exc:
                    log.warning(
                        "event out of bounds, not stored",
                        stripe_event_id=event.get("id"),
                        reason=str(exc),
                    )
                    continue
                raw = json.dumps(event, separators=(",", ":"))
                result = self._ingest.store_event(event, raw, "reconcile")
                if result.inserted:
                    recovered += 1
                    self._metrics.reconcile_recovered.inc()
                    if isinstance(created, int) and created < late_before:
                        late += 1
                    log.info(
                        "missed event recovered",
                        stripe_event_id=event.get("id"),
                        type=event.get("type"),
                    )
            if should_stop is not None and should_stop():
                stopped = True
                break
        if recovered:
            self._store.notify_work()
        previous = self.cursor()
        cursor = max(newest, previous or 0)
        if not stopped and types:
            self._store.set_meta(CURSOR_KEY, str(cursor))
        return ReconcileReport(
            since=start,
            types=tuple(types),
            listed=listed,
            recovered=recovered,
            requests=self._lister.requests - requests_before,
            cursor=cursor if not stopped else (previous or 0),
            seconds=time.perf_counter() - started,
            stopped=stopped,
            late=late,
        )


async def run_periodically(
    reconciler: Reconciler, lister: StripeLister, stop: asyncio.Event, interval: float
) -> None:
    """Reconcile now and every `interval` seconds until `stop` is set; closes `lister`."""
    try:
        while not stop.is_set():
            try:
                report = await anyio.to_thread.run_sync(
                    lambda: reconciler.run(should_stop=stop.is_set)
                )
            except BillbridgeError as exc:
                log.warning("reconcile failed; the next run covers the same window", error=str(exc))
            except Exception:  # a bug must not end the loop: log it, try again next time
                log.exception("reconcile crashed; the next run covers the same window")
            else:
                log.info(
                    "reconcile done",
                    listed=report.listed,
                    recovered=report.recovered,
                    late=report.late,
                    stripe_requests=report.requests,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
    finally:
        lister.close()
