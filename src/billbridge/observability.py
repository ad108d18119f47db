"""Logging (structlog: readable or JSON, tied to the Stripe event id) and Prometheus metrics."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from billbridge.store.records import DELIVERY_STATUSES, StoreStats

# Keys whose values must never reach a log line, whatever code passed them.
_SECRET_KEY_PARTS = (
    "secret",
    "password",
    "api_key",
    "apikey",
    "authorization",
    "signature",
    "token",
)


def _redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        lowered = key.lower()
        if any(part in lowered for part in _SECRET_KEY_PARTS):
            event_dict[key] = "[redacted]"
    return event_dict


def configure_logging(*, log_format: str = "console", level: str = "INFO") -> None:
    """Set up structlog (and route stdlib logging through the same renderer).

    Each line carries the context bound with `structlog.contextvars.bind_contextvars`,
    so lines written while a Stripe event is handled carry its `stripe_event_id`.
    """
    renderer: Any
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_secrets,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log would print every webhook request; our own lines say more.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def get_logger(name: str) -> Any:
    """A structlog logger named for its module."""
    return structlog.get_logger(name)


class _StoreCollector(Collector):
    """Reads queue and delivery numbers from the store at scrape time (all processes)."""

    def __init__(self, stats: Callable[[], StoreStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        try:
            stats = self._stats()
        except Exception:  # the database is down: /readyz says so; keep /metrics answering
            return
        depth = GaugeMetricFamily(
            "billbridge_queue_depth", "Deliveries waiting to be attempted (pending or retrying)."
        )
        depth.add_metric([], stats.queue_depth)
        yield depth
        due = GaugeMetricFamily("billbridge_queue_due", "Deliveries due now.")
        due.add_metric([], stats.due_now)
        yield due
        oldest = GaugeMetricFamily(
            "billbridge_oldest_pending_age_seconds",
            "Seconds since the oldest due delivery became due (0 when none is due).",
        )
        oldest.add_metric([], stats.oldest_pending_age)
        yield oldest
        by_status = GaugeMetricFamily(
            "billbridge_deliveries", "Deliveries by status.", labels=["status"]
        )
        for status in DELIVERY_STATUSES:
            by_status.add_metric([status], stats.deliveries_by_status.get(status, 0))
        yield by_status
        attempts = GaugeMetricFamily(
            "billbridge_attempts", "Delivery attempts recorded, by outcome.", labels=["outcome"]
        )
        for outcome, count in sorted(stats.attempts_by_outcome.items()):
            attempts.add_metric([outcome], count)
        yield attempts
        events = GaugeMetricFamily("billbridge_events_stored", "Stripe events stored.")
        events.add_metric([], stats.events_total)
        yield events
        if stats.last_event_received_at is not None:
            last = GaugeMetricFamily(
                "billbridge_last_event_received_timestamp_seconds",
                "When the newest Stripe event was received (Unix seconds).",
            )
            last.add_metric([], stats.last_event_received_at)
            yield last


class Metrics:
    """Prometheus metrics of one process, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.ingest_duration = Histogram(
            "billbridge_ingest_duration_seconds",
            "Time from request start to answer on POST /webhooks/stripe.",
            ["status"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.ingest_requests = Counter(
            "billbridge_ingest_requests",
            "Webhook requests by result.",
            ["result"],
            registry=self.registry,
        )
        self.attempts = Counter(
            "billbridge_worker_attempts",
            "Delivery attempts made by this process, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.attempt_duration = Histogram(
            "billbridge_customerio_request_duration_seconds",
            "Duration of Customer.io calls made by this process.",
            registry=self.registry,
        )
        self.reconcile_recovered = Counter(
            "billbridge_reconcile_recovered_events",
            "Stripe events found by reconcile in the Events API that had never arrived.",
            registry=self.registry,
        )
        self.late_deliveries = Counter(
            "billbridge_late_deliveries",
            "Deliveries of Customer.io events finished more than 72 h after Stripe created "
            "the event, by the workflow's late_events policy (record, trigger, skip).",
            ["policy"],
            registry=self.registry,
        )
        self._store_collector: _StoreCollector | None = None

    def watch_store(self, stats: Callable[[], StoreStats]) -> None:
        """Export the store's numbers (queue depth, oldest pending age, ...) at scrape time."""
        if self._store_collector is None:
            self._store_collector = _StoreCollector(stats)
            self.registry.register(self._store_collector)

    def render(self) -> bytes:
        """The Prometheus text exposition of everything registered."""
        return generate_latest(self.registry)
