"""DeliveryExecutor: takes one claimed delivery from start to a recorded outcome.

The order of decisions, each recorded as the delivery's status:

    workflow gone or changed  -> skipped
    test-mode event, policy   -> skipped (ignore) / computed but not sent (dry_run)
    person unresolvable       -> skipped, with the reason
    filter false, Skip        -> skipped, with the reason
    template error            -> failed (fix the workflow, then replay)
    no credentials            -> dry_run, with the exact request
    non-idempotent, sent once -> skipped unless the replay was forced
    Customer.io 2xx           -> succeeded
    retryable error           -> retrying (RetryPolicy) or failed when the window ends
    ambiguous send timeout    -> failed with outcome "unknown" (policy "fail", the default),
                                 or retried (policy "retry")
    terminal error            -> failed, with Customer.io's reason
"""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import structlog

from billbridge.config import Settings
from billbridge.customerio.client import CustomerIOClient
from billbridge.customerio.requests import CioRequest
from billbridge.delivery.retry import RetryPolicy
from billbridge.errors import (
    AmbiguousSendError,
    DeliveryError,
    RetryableDeliveryError,
    StripeAPIError,
    TerminalDeliveryError,
)
from billbridge.identity import IdentityResolver, Unresolved
from billbridge.observability import Metrics
from billbridge.store.base import Store
from billbridge.store.records import AttemptOutcome, AttemptRecord, ClaimedDelivery, DeliveryStatus
from billbridge.workflows.catalog import WorkflowCatalog
from billbridge.workflows.planner import Skip, plan_action
from billbridge.workflows.templates import TemplateError

log = structlog.get_logger("billbridge.delivery")

_BODY_KEEP = 2048  # bytes of a Customer.io answer kept with the attempt


class DeliveryExecutor:
    """Runs claimed deliveries; safe to call concurrently from many tasks."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        catalog: WorkflowCatalog,
        resolver: IdentityResolver,
        cio: CustomerIOClient,
        policy: RetryPolicy,
        metrics: Metrics,
    ) -> None:
        self._settings = settings
        self._store = store
        self._catalog = catalog
        self._resolver = resolver
        self._cio = cio
        self._policy = policy
        self._metrics = metrics

    async def run(self, claim: ClaimedDelivery) -> DeliveryStatus:
        """Attempt the delivery once and record what happened. Never raises."""
        structlog.contextvars.bind_contextvars(
            stripe_event_id=claim.stripe_event_id,
            delivery_id=claim.delivery_id,
            workflow=claim.workflow_id,
        )
        try:
            return await self._run(claim)
        except Exception as exc:  # a bug must not kill the worker or lose the delivery
            log.exception("delivery crashed; it will be retried", error_type=type(exc).__name__)
            error = RetryableDeliveryError(f"internal error: {type(exc).__name__}")
            return await self._retry_or_fail(
                claim, error, self._attempt("retryable_error", None, time.time(), error=str(error))
            )
        finally:
            structlog.contextvars.unbind_contextvars("stripe_event_id", "delivery_id", "workflow")

    async def _run(self, claim: ClaimedDelivery) -> DeliveryStatus:
        started = time.time()
        workflow = await anyio.to_thread.run_sync(self._catalog.get, claim.workflow_id)
        if workflow is None:
            return await self._finish(
                claim, "skipped", f"workflow {claim.workflow_id!r} no longer exists"
            )
        if claim.action_index >= len(workflow.actions) or (
            workflow.actions[claim.action_index].type != claim.action_type
        ):
            return await self._finish(
                claim,
                "skipped",
                f"workflow {claim.workflow_id!r} changed: action {claim.action_index} "
                f"is no longer a {claim.action_type!r}",
            )
        dry_run = self._settings.dry_run
        if not claim.livemode:
            if self._settings.test_mode_events == "ignore":
                return await self._finish(
                    claim,
                    "skipped",
                    "test-mode events are ignored (BILLBRIDGE_TEST_MODE_EVENTS=ignore)",
                )
            dry_run = dry_run or self._settings.test_mode_events == "dry_run"

        event: dict[str, Any] = json.loads(claim.payload)
        try:
            person = await anyio.to_thread.run_sync(self._resolver.resolve, event)
        except StripeAPIError as exc:
            if not exc.retryable:
                raise
            error = RetryableDeliveryError(f"could not look the customer up in Stripe: {exc}")
            attempt = self._attempt("retryable_error", None, started, error=str(error))
            return await self._retry_or_fail(claim, error, attempt)
        if isinstance(person, Unresolved):
            return await self._finish(claim, "skipped", person.reason)

        try:
            planned = plan_action(
                workflow,
                claim.action_index,
                event,
                person,
                identifier_mode=self._settings.identifier,
            )
        except TemplateError as exc:
            attempt = self._attempt("terminal_error", None, started, error=str(exc))
            return await self._complete(claim, "failed", attempt, str(exc))
        if isinstance(planned, Skip):
            return await self._finish(claim, "skipped", planned.reason)

        if dry_run:
            reason = (
                "dry run: Customer.io credentials are not configured"
                if self._settings.dry_run
                else "dry run: test-mode event (BILLBRIDGE_TEST_MODE_EVENTS=dry_run)"
            )
            attempt = self._attempt("dry_run", planned, started, error=reason)
            return await self._complete(claim, "dry_run", attempt, reason)
        if not planned.idempotent and claim.sent_ok and not claim.force:
            reason = "already sent once; replay with force to send it again"
            attempt = self._attempt("skipped", planned, started, error=reason)
            return await self._complete(claim, "skipped", attempt, reason)
        return await self._send(claim, planned, started)

    async def _send(
        self, claim: ClaimedDelivery, request: CioRequest, started: float
    ) -> DeliveryStatus:
        try:
            response = await self._cio.send(request)
        except AmbiguousSendError as exc:
            if self._settings.transactional_timeout_policy == "retry":
                return await self._retry_or_fail(
                    claim, exc, self._attempt("unknown", request, started, exc)
                )
            reason = (
                f"{exc}. Customer.io may or may not have sent it, so it is not retried "
                "automatically; check the message log in Customer.io and replay with force "
                "to send it again"
            )
            attempt = self._attempt("unknown", request, started, exc, error=reason)
            return await self._complete(claim, "failed", attempt, reason)
        except TerminalDeliveryError as exc:
            attempt = self._attempt("terminal_error", request, started, exc)
            return await self._complete(claim, "failed", attempt, str(exc))
        except DeliveryError as exc:
            attempt = self._attempt("retryable_error", request, started, exc)
            return await self._retry_or_fail(claim, exc, attempt)
        self._metrics.attempt_duration.observe(response.duration_ms / 1000)
        attempt = AttemptRecord(
            outcome="succeeded",
            started_at=started,
            duration_ms=response.duration_ms,
            request=request.summary(),
            response_status=response.status_code,
            response_body=response.body[:_BODY_KEEP],
        )
        return await self._complete(
            claim, "succeeded", attempt, None, sent_ok=True if not request.idempotent else None
        )

    async def _retry_or_fail(
        self, claim: ClaimedDelivery, error: DeliveryError, attempt: AttemptRecord
    ) -> DeliveryStatus:
        decision = self._policy.decide(
            error,
            attempts_made=claim.attempt_count + 1,
            now=time.time(),
            deadline=claim.deadline_at,
        )
        if not decision.retry:
            return await self._complete(claim, "failed", attempt, decision.reason)
        self._metrics.attempts.labels(attempt.outcome).inc()
        owned = await anyio.to_thread.run_sync(
            lambda: self._store.reschedule(
                claim.delivery_id, claim.claim_id, decision.delay, attempt, error=str(error)
            )
        )
        log.warning(
            "delivery will be retried",
            retry_in_seconds=round(decision.delay, 1),
            error=str(error),
            owned=owned,
        )
        return "retrying"

    async def _finish(
        self, claim: ClaimedDelivery, status: DeliveryStatus, reason: str
    ) -> DeliveryStatus:
        """Complete without calling Customer.io (skipped); the reason is kept as an attempt."""
        attempt = self._attempt("skipped", None, time.time(), error=reason)
        return await self._complete(claim, status, attempt, reason)

    async def _complete(
        self,
        claim: ClaimedDelivery,
        status: DeliveryStatus,
        attempt: AttemptRecord,
        error: str | None,
        *,
        sent_ok: bool | None = None,
    ) -> DeliveryStatus:
        self._metrics.attempts.labels(attempt.outcome).inc()
        owned = await anyio.to_thread.run_sync(
            lambda: self._store.complete(
                claim.delivery_id, claim.claim_id, status, attempt, error=error, sent_ok=sent_ok
            )
        )
        if not owned:
            log.warning("lease lost before completion; the new owner decides", status=status)
        elif status == "failed":
            log.error("delivery failed", reason=error)
        else:
            log.info("delivery finished", status=status, reason=error)
        return status

    @staticmethod
    def _attempt(
        outcome: AttemptOutcome,
        request: CioRequest | None,
        started: float,
        exc: DeliveryError | None = None,
        *,
        error: str | None = None,
    ) -> AttemptRecord:
        return AttemptRecord(
            outcome=outcome,
            started_at=started,
            duration_ms=(time.time() - started) * 1000,
            request=request.summary() if request is not None else None,
            response_status=exc.status_code if exc is not None else None,
            response_body=(exc.response_body or "")[:_BODY_KEEP]
            if exc is not None and exc.response_body
            else None,
            error=error if error is not None else (str(exc) if exc is not None else None),
        )
