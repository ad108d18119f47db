"""Retention: finished events older than BILLBRIDGE_RETENTION_DAYS lose their personal data.

    retention = Retention(store, settings, metrics)
    retention.run_once()                 # -> RetentionReport(pruned=..., erasures_scrubbed=...)
    await retention.run(stop)            # the background loop (composition.py starts it)

What is pruned: the raw payload (a stub stays: id, type, created, livemode), the email
column, every attempt's request and response body, and personal values in errors. What
stays: the event row and its `stripe_event_id` (so a re-sent or reconciled event is still
a duplicate), deliveries and attempts (statuses, times, response codes), the customers
table and the billing projection (profiles are computed from them). The floor of 30 days
(config.RETENTION_FLOOR_DAYS) keeps ids past Stripe's retries and reconcile's look-back.

Each loop tick also scrubs erasure events whose Customer.io action is done (the person's
identifier leaves them). One process of a fleet prunes per interval (`claim_turn` on the
meta row `retention.last_run`); each statement handles at most BATCH events, and one run
at most MAX_BATCHES of them, so no transaction is long and the next run continues.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import structlog

from billbridge.config import Settings
from billbridge.errors import BillbridgeError
from billbridge.observability import Metrics
from billbridge.store.base import Store

log = structlog.get_logger("billbridge.retention")

BATCH = 1000  # events per transaction
MAX_BATCHES = 20  # transactions per run: the rest waits for the next run
ERASURE_TICK = 60.0  # seconds: the longest wait before a done erasure event is scrubbed
TURN_KEY = "retention.last_run"
DAY = 86_400.0  # seconds


@dataclass(frozen=True)
class RetentionReport:
    """What one run did (pruned is 0 when it was not this process's turn)."""

    pruned: int
    erasures_scrubbed: int
    ran: bool


class Retention:
    """Prunes old finished events and scrubs done erasure events."""

    def __init__(self, store: Store, settings: Settings, metrics: Metrics) -> None:
        self._store = store
        self._days = settings.retention_days
        self._interval = settings.retention_interval
        self._metrics = metrics

    @property
    def enabled(self) -> bool:
        """False under BILLBRIDGE_RETENTION_DAYS=0 (off): payloads are kept forever."""
        return self._days > 0

    def run_once(self, *, force: bool = False) -> RetentionReport:
        """One tick: scrub done erasures; prune when it is this process's turn (or `force`)."""
        scrubbed = self._batches(self._store.scrub_finished_erasures)
        if not self.enabled or not (force or self._store.claim_turn(TURN_KEY, self._interval)):
            return RetentionReport(pruned=0, erasures_scrubbed=scrubbed, ran=False)
        older_than = self._days * DAY
        pruned = self._batches(lambda limit: self._store.prune_events(older_than, limit))
        if pruned:
            self._metrics.retention_pruned.inc(pruned)
        return RetentionReport(pruned=pruned, erasures_scrubbed=scrubbed, ran=True)

    @staticmethod
    def _batches(step: Callable[[int], int]) -> int:
        total = 0
        for _ in range(MAX_BATCHES):
            done = step(BATCH)
            total += done
            if done < BATCH:
                break
        return total

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until `stop` is set: every min(interval, ERASURE_TICK) seconds."""
        tick = min(self._interval, ERASURE_TICK)
        while not stop.is_set():
            try:
                report = await anyio.to_thread.run_sync(self.run_once)
            except BillbridgeError as exc:
                log.warning("retention run failed; the next run continues", error=str(exc))
            except Exception:  # a bug must not end the loop: log it, try again next time
                log.exception("retention run crashed; the next run continues")
            else:
                if report.pruned or report.erasures_scrubbed:
                    log.info(
                        "retention done",
                        pruned=report.pruned,
                        erasure_events_scrubbed=report.erasures_scrubbed,
                        retention_days=self._days,
                    )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=tick)
