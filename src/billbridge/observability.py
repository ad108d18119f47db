"""Logging (structlog: readable or JSON, tied to the Stripe event id) and Prometheus metrics."""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from billbridge.config import Settings
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
    "cookie",
)
REDACTED = "[redacted]"
# Secrets recognised by their shape inside any text (a message, an exception, a URL):
# Stripe keys and webhook secrets, bearer tokens, Billbridge's cookies and API tokens, and
# `name=value` / `"name": "value"` pairs whose name says secret.
_SECRET_PATTERNS = (
    re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]+"),
    re.compile(r"\bwhsec_[A-Za-z0-9+/=_-]+"),
    re.compile(r"(?i)(?<=bearer )[^\s'\",;]+"),
    re.compile(r"(?i)(?<=basic )[A-Za-z0-9+/=]{8,}"),
    re.compile(r"(?<=billbridge_session=)[^;\s'\",]+"),
    re.compile(r"(?<=billbridge_csrf=)[^;\s'\",]+"),
    re.compile(
        r"(?i)((?:password|passwd|secret|token|api_key|apikey|authorization|cookie)[\"']?"
        r"\s*[:=]\s*[\"']?)[^\s'\",;&}]+"
    ),
)
_MAX_REDACT_DEPTH = 4  # nested values of a log line redacted; deeper ones printed as text
MAX_TRACEBACK_FRAMES = 40  # the innermost frames of each exception in a chain
MAX_TRACEBACK_CHARS = 20_000  # a longer traceback keeps its head and its tail


def redact_text(text: str, known: tuple[str, ...] = ()) -> str:
    """`text` with every secret it shows replaced by `[redacted]`."""
    for secret in known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern in _SECRET_PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        else:
            text = pattern.sub(REDACTED, text)
    return text


def format_exception_text(exc_info: tuple[Any, Any, Any]) -> str:
    """A traceback as plain text: no local variables (they hold passwords, tokens and
    keys), the innermost frames of each exception only, at most MAX_TRACEBACK_CHARS."""
    exc_type, exc, tb = exc_info
    try:
        summary = traceback.TracebackException(
            exc_type, exc, tb, limit=-MAX_TRACEBACK_FRAMES, capture_locals=False
        )
        text = "".join(summary.format())
    except Exception as failure:
        text = f"{getattr(exc_type, '__name__', exc_type)}: (traceback unavailable: {failure!r})"
    if len(text) > MAX_TRACEBACK_CHARS:
        half = MAX_TRACEBACK_CHARS // 2
        cut = len(text) - 2 * half
        text = f"{text[:half]}\n... [{cut} characters cut] ...\n{text[-half:]}"
    return text.rstrip("\n")


def _exc_info_of(value: Any) -> tuple[Any, Any, Any] | None:
    if isinstance(value, BaseException):
        return (type(value), value, value.__traceback__)
    if isinstance(value, tuple) and len(value) == 3:
        return value if value[0] is not None else None
    if value:
        info = sys.exc_info()
        return info if info[0] is not None else None
    return None


def _format_exception(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """`exc_info` (ours or a foreign logger's, like uvicorn's "Exception in ASGI
    application") as a bounded plain-text `exception`, the same in console and JSON."""
    exc_info = event_dict.pop("exc_info", None)
    info = _exc_info_of(exc_info)
    if info is not None:
        event_dict["exception"] = format_exception_text(info)
    return event_dict


class _Redactor:
    """Processor: secret-named keys emptied, and secrets removed from every text value."""

    def __init__(self, known: tuple[str, ...]) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self.known = tuple(sorted({k for k in known if len(k) >= 6}, key=len, reverse=True))

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            lowered = key.lower()
            if any(part in lowered for part in _SECRET_KEY_PARTS):
                event_dict[key] = REDACTED
                continue
            event_dict[key] = self._redact(event_dict[key], depth=0)
        return event_dict

    def _redact(self, value: Any, *, depth: int) -> Any:
        if isinstance(value, str):
            return redact_text(value, self.known)
        if value is None or isinstance(value, int | float | bool):
            return value
        if depth < _MAX_REDACT_DEPTH and isinstance(value, dict):
            return {str(k): self._redact(v, depth=depth + 1) for k, v in value.items()}
        if depth < _MAX_REDACT_DEPTH and isinstance(value, list | tuple):
            return [self._redact(v, depth=depth + 1) for v in value]
        return redact_text(str(value), self.known)  # what the renderer would print anyway


def settings_secrets(settings: Settings) -> tuple[str, ...]:
    """Every credential the settings hold (and a database URL's password), for redaction."""
    found = [
        value.get_secret_value()
        for value in settings.model_dump().values()
        if isinstance(value, SecretStr)
    ]
    found.extend(settings.webhook_secrets)
    password = make_url(settings.database_url).password
    if password:
        found.append(str(password))
    return tuple(found)


def configure_logging(
    *, log_format: str = "console", level: str = "INFO", secrets: Iterable[str] = ()
) -> None:
    """Set up structlog (and route stdlib logging through the same renderer).

    Each line carries the context bound with `structlog.contextvars.bind_contextvars`,
    so lines written while a Stripe event is handled carry its `stripe_event_id`. Every
    line, Billbridge's or a library's (uvicorn, SQLAlchemy, httpx...), goes through the
    same chain: exceptions as bounded plain text without local variables, then redaction
    of `secrets` (the configured credentials) and of anything shaped like one.
    """
    renderer: Any
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _format_exception,
        _Redactor(tuple(secrets)),
    ]
    structlog.configure(
        processors=[*shared, renderer],
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

    def __init__(
        self, stats: Callable[[], StoreStats], live_workers: Callable[[], int] | None
    ) -> None:
        self._stats = stats
        self._live_workers = live_workers

    def collect(self) -> Iterator[Metric]:
        try:
            stats = self._stats()
            workers = None if self._live_workers is None else self._live_workers()
        except Exception:  # the database is down: /readyz says so; keep /metrics answering
            return
        if workers is not None:
            alive = GaugeMetricFamily(
                "billbridge_workers_alive",
                "Workers (`billbridge worker`, `serve` with its worker) that sent a heartbeat "
                "in the last 9 s, over the whole fleet.",
            )
            alive.add_metric([], workers)
            yield alive
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
        self.retention_pruned = Counter(
            "billbridge_retention_pruned_events",
            "Events whose payload and bodies this process removed for retention "
            "(BILLBRIDGE_RETENTION_DAYS).",
            registry=self.registry,
        )
        self.erasures = Counter(
            "billbridge_erasures",
            "Erasures of a person's personal data made by this process.",
            registry=self.registry,
        )
        self._store_collector: _StoreCollector | None = None

    def watch_store(
        self, stats: Callable[[], StoreStats], live_workers: Callable[[], int] | None = None
    ) -> None:
        """Export the store's numbers (queue depth, oldest pending age, ...) and the count of
        `live_workers` at scrape time."""
        if self._store_collector is None:
            self._store_collector = _StoreCollector(stats, live_workers)
            self.registry.register(self._store_collector)

    def render(self) -> bytes:
        """The Prometheus text exposition of everything registered."""
        return generate_latest(self.registry)
