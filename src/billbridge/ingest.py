"""The webhook endpoint: verify, parse, store event + deliveries in one transaction, then 200.

Order of checks for `POST /webhooks/stripe` (SPEC §3); every refusal stores nothing:

    Content-Type not application/json     415
    body over the size cap                413
    Stripe-Signature missing/bad/stale    400
    body not JSON, not a Stripe event     400
    database unavailable                  503 (Stripe retries)
    stored, or a duplicate event id       200
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import orjson
import structlog
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope

from billbridge.alerts.refusals import RefusalCounter
from billbridge.billing.projection import rows_for_event
from billbridge.billing.semantic import derive_changes, payload_only_change_filter
from billbridge.config import Settings
from billbridge.errors import StoreUnavailableError, WebhookRejected
from billbridge.observability import Metrics
from billbridge.store.base import Store
from billbridge.store.records import EventSource, IngestResult, NewDelivery
from billbridge.stripe.events import customer_record_from, new_event_from, parse_event
from billbridge.stripe.signature import verify_signature
from billbridge.workflows.catalog import WorkflowCatalog

log = structlog.get_logger("billbridge.ingest")


def _webhook_headers(scope: Scope) -> tuple[str, str | None, str | None]:
    """Content-Type, Content-Length and Stripe-Signature straight from the ASGI scope (the
    server gives header names lowercased; the first of a repeated header counts)."""
    content_type = content_length = signature = None
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = content_type if content_type is not None else value
        elif name == b"content-length":
            content_length = content_length if content_length is not None else value
        elif name == b"stripe-signature":
            signature = signature if signature is not None else value
    return (
        (content_type or b"").decode("latin-1"),
        None if content_length is None else content_length.decode("latin-1"),
        None if signature is None else signature.decode("latin-1"),
    )


class IngestService:
    """Turns verified Stripe events into stored events and deliveries (the outbox)."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        catalog: WorkflowCatalog,
        metrics: Metrics,
        secrets: Sequence[str],
    ) -> None:
        self._settings = settings
        self._store = store
        self._catalog = catalog
        self._metrics = metrics
        self._secrets = tuple(secrets)
        self._refusals = RefusalCounter(store)
        # The labelled metric children, by (status, outcome): labels() takes a lock each time.
        self._observers: dict[tuple[int, str], tuple[Any, Any]] = {}
        # A filtered-out debug line still costs a logger bind per call: skip the call.
        self._debug = settings.log_level.upper() == "DEBUG"

    def deliveries_for(self, event_type: str, livemode: bool) -> list[NewDelivery]:
        """The deliveries a new event needs; none for test-mode events that are ignored."""
        if not livemode and self._settings.test_mode_events == "ignore":
            return []
        return self._catalog.deliveries_for(event_type, livemode)

    def _deliveries_for_event(self, event: dict[str, Any]) -> list[NewDelivery]:
        """`deliveries_for`, with the semantic-event workflows that cannot fire decided now.

        A workflow whose whole filter is `changes.<name>`, for a change read from the event
        alone (not `payment_recovered` or `trial_converted`, which also read the
        projection), is stored as skipped with the reason the worker would give, instead of
        costing the worker a claim, a decision and a record. Any other filter is evaluated
        at delivery.
        """
        deliveries = self.deliveries_for(event["type"], bool(event["livemode"]))
        changes: dict[str, Any] | None = None
        decided: list[NewDelivery] = []
        for delivery in deliveries:
            workflow = self._catalog.get(delivery.workflow_id)
            name = payload_only_change_filter(workflow.filter if workflow else None)
            if name is not None:
                changes = derive_changes(event) if changes is None else changes
                if name not in changes:
                    reason = f"filter did not match: changes.{name}"
                    decided.append(replace(delivery, status="skipped", reason=reason))
                    continue
            decided.append(delivery)
        return decided

    def store_event(self, event: dict[str, Any], raw: str, source: EventSource) -> IngestResult:
        """Store a parsed, trusted event through the same path as a webhook (also used by
        reconcile and backfill), and apply its objects to the billing projection in the
        same transaction. Blocking: call it from a thread in async code."""
        return self._store.ingest(*self._rows(event, raw, source))

    async def store_event_async(
        self, event: dict[str, Any], raw: str, source: EventSource
    ) -> IngestResult:
        """`store_event` for the event loop (the webhook's path)."""
        return await self._store.ingest_async(*self._rows(event, raw, source))

    def _rows(self, event: dict[str, Any], raw: str, source: EventSource) -> tuple[Any, ...]:
        """Everything one event writes, in `Store.ingest`'s argument order."""
        return (
            new_event_from(event, raw, source),
            self._deliveries_for_event(event),
            customer_record_from(event),
            self._settings.retry_window,
            rows_for_event(event),
        )

    async def answer(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        """`POST /webhooks/stripe`, straight on ASGI (the hot path needs no Request or
        Response objects): the status and JSON body to answer. Raises `ClientDisconnect`
        when the sender hangs up before the body is complete (nothing is stored)."""
        started = time.perf_counter()
        try:
            content_type, content_length, signature = _webhook_headers(scope)
            body = await self._read_body(receive, content_type, content_length)
            try:
                verify_signature(body, signature, self._secrets)
            except WebhookRejected:
                self._refusals.note()  # for the alert on refused signatures
                raise
            event = parse_event(body)
            raw = body.decode("utf-8")
        except UnicodeDecodeError:
            return self._answer(started, 400, "rejected", {"error": "body is not UTF-8 JSON"})
        except WebhookRejected as exc:
            return self._answer(started, exc.status_code, "rejected", {"error": exc.reason})

        structlog.contextvars.bind_contextvars(stripe_event_id=event["id"])
        try:
            result = await self.store_event_async(event, raw, "webhook")
        except StoreUnavailableError as exc:
            log.error("could not store event; Stripe will retry", error=str(exc))  # noqa: TRY400 - the message is enough
            return self._answer(
                started,
                503,
                "unavailable",
                {"error": "the event store is unavailable; retry later"},
            )
        finally:
            structlog.contextvars.unbind_contextvars("stripe_event_id")
        # No wake-up here: the store's ingest transaction already woke the workers (in
        # process, and with NOTIFY on PostgreSQL).
        outcome = "stored" if result.inserted else "duplicate"
        if self._debug:
            log.debug(
                "event stored" if result.inserted else "duplicate event ignored",
                stripe_event_id=event["id"],
                type=event["type"],
                deliveries=result.deliveries,
            )
        return self._answer(
            started,
            200,
            outcome,
            {"received": True, "duplicate": not result.inserted, "deliveries": result.deliveries},
        )

    async def _read_body(self, receive: Receive, content_type: str, declared: str | None) -> bytes:
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            raise WebhookRejected(
                415,
                "Content-Type must be application/json"
                + (f", not {media_type[:100]}" if media_type else ""),
            )
        limit = self._settings.max_body_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise WebhookRejected(413, f"body is larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect
                raise ClientDisconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise WebhookRejected(413, f"body is larger than {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _answer(
        self, started: float, status: int, result: str, body: dict[str, Any]
    ) -> tuple[int, bytes]:
        observers = self._observers.get((status, result))
        if observers is None:
            observers = (
                self._metrics.ingest_duration.labels(str(status)),
                self._metrics.ingest_requests.labels(result),
            )
            self._observers[(status, result)] = observers
        observers[0].observe(time.perf_counter() - started)
        observers[1].inc()
        if status >= 400 and status != 503:
            log.info("webhook rejected", status=status, reason=body.get("error"))
        return status, orjson.dumps(body)
