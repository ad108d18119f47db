"""DeliveryExecutor: takes claimed deliveries from start to recorded outcomes, in batches.

Three phases per batch of claims, so the costs that do not depend on the number of
deliveries are paid once per batch, not once per delivery:

    decide   (one worker thread)  workflow, test-mode policy, then the decision chain
                                  (delivery/decision.py: person, filter, plan); reads only
    send     (event loop)         Track person calls of several deliveries as ONE
                                  `POST /api/v2/batch`; anything else one call each
    record   (one store write)    every outcome and attempt in one transaction, with
                                  what deciding learnt from Stripe (customers, projection)

The order of decisions for one delivery, each recorded as its status:

    workflow gone or changed  -> skipped
    test-mode event, policy   -> skipped (ignore) / computed but not sent (dry_run; the
                                 default without a test workspace) / sent to the test
                                 workspace (CUSTOMERIO_TEST_*) or, with `deliver` and no
                                 test workspace, to the live one
    person unresolvable       -> skipped, with the reason
    filter false, Skip        -> skipped, with the reason
    template error            -> failed (fix the workflow, then replay)
    event call > 72 h late    -> the workflow's late_events policy (workflows/late_events.py):
                                 record / trigger (sent, marked late) or skip (skipped)
    no credentials            -> dry_run, with the exact request
    non-idempotent, sent once -> skipped unless the replay was forced
    Customer.io 2xx           -> succeeded
    retryable error           -> retrying (RetryPolicy) or failed when the window ends
    ambiguous send timeout    -> failed with outcome "unknown" (policy "fail", the default),
                                 or retried (policy "retry")
    terminal error            -> failed, with Customer.io's reason
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
import structlog

from billbridge.config import CioMode, Settings
from billbridge.customerio.client import CustomerIOClient
from billbridge.customerio.requests import CioRequest
from billbridge.customerio.v2 import to_batch_operation
from billbridge.delivery.decision import DecisionBatch, DecisionChain, Failed, Skipped
from billbridge.delivery.retry import RetryPolicy
from billbridge.errors import (
    AmbiguousSendError,
    DeliveryError,
    RetryableDeliveryError,
    StoreUnavailableError,
    StripeAPIError,
    TerminalDeliveryError,
)
from billbridge.identity import IdentityResolver, Unresolved
from billbridge.observability import Metrics
from billbridge.store.base import Store
from billbridge.store.records import (
    AttemptOutcome,
    AttemptRecord,
    ClaimedDelivery,
    Completion,
    DeliveryStatus,
)
from billbridge.store.records_billing import DiscoveredFacts
from billbridge.workflows.catalog import WorkflowCatalog
from billbridge.workflows.late_events import LateDecision, recorded_policy, summary_with_late

log = structlog.get_logger("billbridge.delivery")

_BODY_KEEP = 2048  # bytes of a Customer.io answer kept with the attempt
MAX_BATCH_OPERATIONS = 100  # person operations per `POST /api/v2/batch`
RECORD_RETRY_FIRST = 0.5  # seconds before recording outcomes again after a database error
RECORD_RETRY_MAX = 5.0  # seconds: the longest wait between tries


@dataclass(frozen=True)
class _Ready:
    """A delivery planned and cleared to be sent."""

    claim: ClaimedDelivery
    request: CioRequest
    started: float
    late: LateDecision | None = None
    mode: CioMode = "live"  # the Customer.io workspace it goes to


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
        self._chain = DecisionChain(settings, store, resolver)
        self._cio = cio
        self._policy = policy
        self._metrics = metrics

    async def run_many(self, claims: Sequence[ClaimedDelivery]) -> list[Completion]:
        """Attempt each delivery once and record every outcome. Never raises."""
        decided, facts = await anyio.to_thread.run_sync(self._decide_all, claims)
        done = [item for item in decided if isinstance(item, Completion)]
        ready = [item for item in decided if isinstance(item, _Ready)]
        if ready:
            done.extend(await self._send_all(ready))
        await self._record(done, facts)
        return done

    async def _finish_when_possible(
        self, completions: list[Completion], facts: DiscoveredFacts
    ) -> list[bool]:
        """Record the outcomes with the facts learnt deciding them, waiting out a database
        outage: what was sent must be recorded (a transactional send's success above all),
        even if only to be fenced out because another worker has taken the deliveries over
        meanwhile (the facts are written anyway: they are true whoever owns them)."""
        delay = RECORD_RETRY_FIRST
        while True:
            try:
                return await anyio.to_thread.run_sync(self._store.finish_many, completions, facts)
            except StoreUnavailableError as exc:
                log.warning(
                    "could not record delivery outcomes; trying again",
                    deliveries=len(completions),
                    retry_in_seconds=delay,
                    error=str(exc),
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECORD_RETRY_MAX)

    # Decide -------------------------------------------------------------------------------

    def _decide_all(
        self, claims: Sequence[ClaimedDelivery]
    ) -> tuple[list[Completion | _Ready], DiscoveredFacts]:
        # One decision batch: an event is parsed and its person resolved once, a
        # customer's profile computed once; what it learns is recorded with the outcomes.
        batch = self._chain.batch()
        events: dict[int, dict[str, Any]] = {}
        for claim in claims:
            if claim.event_id not in events:
                try:
                    events[claim.event_id] = orjson.loads(claim.payload)
                except ValueError:
                    continue  # decided (and failed) on its own
        batch.prefetch(events.values())
        decided = [self._decide_safely(claim, batch, events) for claim in claims]
        return decided, batch.facts()

    def _decide_safely(
        self, claim: ClaimedDelivery, batch: DecisionBatch, events: dict[int, dict[str, Any]]
    ) -> Completion | _Ready:
        started = time.time()
        structlog.contextvars.bind_contextvars(
            stripe_event_id=claim.stripe_event_id, delivery_id=claim.delivery_id
        )
        try:
            return self._decide(claim, started, batch, events)
        except Exception as exc:  # a bug must not kill the worker or lose the delivery
            log.exception("delivery crashed; it will be retried", error_type=type(exc).__name__)
            error = RetryableDeliveryError(f"internal error: {type(exc).__name__}")
            attempt = _attempt("retryable_error", None, started, error=str(error))
            return self._retry_or_fail(claim, error, attempt)
        finally:
            structlog.contextvars.unbind_contextvars("stripe_event_id", "delivery_id")

    def _decide(
        self,
        claim: ClaimedDelivery,
        started: float,
        batch: DecisionBatch,
        events: dict[int, dict[str, Any]],
    ) -> Completion | _Ready:
        workflow = self._catalog.get(claim.workflow_id)
        if workflow is None:
            return _skip(claim, started, f"workflow {claim.workflow_id!r} no longer exists")
        if claim.action_index >= len(workflow.actions) or (
            workflow.actions[claim.action_index].type != claim.action_type
        ):
            return _skip(
                claim,
                started,
                f"workflow {claim.workflow_id!r} changed: action {claim.action_index} "
                f"is no longer a {claim.action_type!r}",
            )
        # Effective settings: credentials may be saved in the dashboard.
        mode, dry_reason = _route(self._cio.settings, claim.livemode)
        if mode is None:
            return _skip(claim, started, dry_reason or "")

        if claim.event_id not in events:
            events[claim.event_id] = orjson.loads(claim.payload)
        event = events[claim.event_id]
        try:
            person = batch.person(event, key=claim.event_id)
        except StripeAPIError as exc:
            if not exc.retryable:
                raise
            error = RetryableDeliveryError(f"could not look the customer up in Stripe: {exc}")
            attempt = _attempt("retryable_error", None, started, error=str(error))
            return self._retry_or_fail(claim, error, attempt)
        if isinstance(person, Unresolved):
            return _skip(claim, started, person.reason)
        decided = batch.action(
            workflow,
            claim.action_index,
            event,
            person,
            created=claim.event_created,
            now=time.time(),
        )
        if isinstance(decided, Failed):
            attempt = _attempt("terminal_error", None, started, error=decided.reason)
            return _done(claim, "failed", attempt, decided.reason)
        if isinstance(decided, Skipped):
            if decided.request is None:
                return _skip(claim, started, decided.reason)
            attempt = _attempt(
                "skipped", decided.request, started, error=decided.reason, late=decided.late
            )
            return _done(claim, "skipped", attempt, decided.reason)
        planned, late = decided.request, decided.late

        if dry_reason is not None:
            attempt = _attempt("dry_run", planned, started, late=late)
            return _done(claim, "dry_run", attempt, dry_reason)
        if not planned.idempotent and claim.sent_ok and not claim.force:
            reason = "already sent once; replay with force to send it again"
            attempt = _attempt("skipped", planned, started, error=reason)
            return _done(claim, "skipped", attempt, reason)
        return _Ready(claim, planned, started, late, mode)

    # Send ---------------------------------------------------------------------------------

    async def _send_all(self, ready: list[_Ready]) -> list[Completion]:
        """Person calls of several deliveries go out as v2 batches; the rest one by one."""
        # One list per workspace: a v2 batch never mixes live and test calls.
        batched: dict[CioMode, list[tuple[_Ready, dict[str, Any]]]] = {"live": [], "test": []}
        single: list[_Ready] = []
        batching = self._settings.track_batching == "auto" and len(ready) > 1
        for item in ready:
            operation = to_batch_operation(item.request) if batching else None
            if operation is None:
                single.append(item)
            else:
                batched[item.mode].append((item, operation))
        jobs: list[Coroutine[Any, Any, list[Completion]]] = []
        for group in batched.values():
            if len(group) == 1:
                single.append(group.pop()[0])
            jobs.extend(
                self._send_batch(group[start : start + MAX_BATCH_OPERATIONS])
                for start in range(0, len(group), MAX_BATCH_OPERATIONS)
            )
        jobs.extend(self._send_one(item) for item in single)
        results = await asyncio.gather(*jobs)
        return [completion for group in results for completion in group]

    async def _send_one(self, item: _Ready) -> list[Completion]:
        claim, request, started, late = item.claim, item.request, item.started, item.late
        try:
            response = await self._cio.send(request, mode=item.mode)
        except AmbiguousSendError as exc:
            if self._settings.transactional_timeout_policy == "retry":
                attempt = _attempt("unknown", request, started, exc, late=late)
                return [self._retry_or_fail(claim, exc, attempt)]
            reason = (
                f"{exc}. Customer.io may or may not have sent it, so it is not retried "
                "automatically; check the message log in Customer.io and replay with force "
                "to send it again"
            )
            attempt = _attempt("unknown", request, started, exc, error=reason, late=late)
            return [_done(claim, "failed", attempt, reason)]
        except TerminalDeliveryError as exc:
            attempt = _attempt("terminal_error", request, started, exc, late=late)
            return [_done(claim, "failed", attempt, str(exc))]
        except DeliveryError as exc:
            attempt = _attempt("retryable_error", request, started, exc, late=late)
            return [self._retry_or_fail(claim, exc, attempt)]
        self._metrics.attempt_duration.observe(response.duration_ms / 1000)
        attempt = AttemptRecord(
            outcome="succeeded",
            started_at=started,
            duration_ms=response.duration_ms,
            request=summary_with_late(request, late),
            response_status=response.status_code,
            response_body=response.body[:_BODY_KEEP],
        )
        sent_ok = True if not request.idempotent else None
        return [_done(claim, "succeeded", attempt, None, sent_ok=sent_ok)]

    async def _send_batch(self, items: list[tuple[_Ready, dict[str, Any]]]) -> list[Completion]:
        """One `POST /api/v2/batch` for several deliveries; each keeps its own outcome."""
        operations = [operation for _, operation in items]
        started = time.time()
        try:
            result = await self._cio.batch(operations, mode=items[0][0].mode)
        except TerminalDeliveryError:
            # The whole request was refused (400, 401, ...): send each delivery on its own so
            # that one bad operation cannot fail the others, and each gets its own reason.
            groups = await asyncio.gather(*(self._send_one(item) for item, _ in items))
            return [completion for group in groups for completion in group]
        except DeliveryError as exc:
            completions = []
            for item, operation in items:
                attempt = _batch_attempt(
                    "retryable_error",
                    operation,
                    len(items),
                    started,
                    status=exc.status_code,
                    error=str(exc),
                    late=item.late,
                )
                completions.append(self._retry_or_fail(item.claim, exc, attempt))
            return completions
        duration_ms = (time.time() - started) * 1000
        self._metrics.attempt_duration.observe(duration_ms / 1000)
        refused = {error.index: error for error in result.errors}
        completions = []
        for index, (item, operation) in enumerate(items):
            error = refused.get(index)
            if error is None:
                attempt = _batch_attempt(
                    "succeeded",
                    operation,
                    len(items),
                    started,
                    status=200,
                    error=None,
                    late=item.late,
                )
                completions.append(_done(item.claim, "succeeded", attempt, None))
                continue
            reason = f"Customer.io refused the operation: {error.reason}"
            if error.field:
                reason += f" ({error.field})"
            attempt = _batch_attempt(
                "terminal_error",
                operation,
                len(items),
                started,
                status=207,
                error=reason,
                late=item.late,
            )
            completions.append(_done(item.claim, "failed", attempt, reason))
        return completions

    # Record -------------------------------------------------------------------------------

    def _retry_or_fail(
        self, claim: ClaimedDelivery, error: DeliveryError, attempt: AttemptRecord
    ) -> Completion:
        decision = self._policy.decide(
            error,
            attempts_made=claim.attempt_count + 1,
            now=time.time(),
            deadline=claim.deadline_at,
        )
        if not decision.retry:
            return _done(claim, "failed", attempt, decision.reason)
        return Completion(
            delivery_id=claim.delivery_id,
            claim_id=claim.claim_id,
            status=None,
            attempt=attempt,
            error=str(error),
            retry_in=decision.delay,
        )

    async def _record(self, completions: list[Completion], facts: DiscoveredFacts) -> None:
        if not completions and not facts:
            return
        owned = await self._finish_when_possible(completions, facts)
        for completion, still_owned in zip(completions, owned, strict=True):
            self._metrics.attempts.labels(completion.attempt.outcome).inc()
            late = recorded_policy(completion.attempt.request)
            if late is not None and still_owned and completion.status is not None:
                self._metrics.late_deliveries.labels(late).inc()
            fields = {"delivery_id": completion.delivery_id, "reason": completion.error}
            if not still_owned:
                log.warning("lease lost before completion; the new owner decides", **fields)
            elif completion.status is None:
                log.warning(
                    "delivery will be retried",
                    retry_in_seconds=round(completion.retry_in or 0, 1),
                    **fields,
                )
            elif completion.status == "failed":
                log.error("delivery failed", **fields)
            else:
                log.debug("delivery finished", status=completion.status, **fields)


_NO_TEST_WORKSPACE = (
    "dry run: test-mode event and no test workspace is configured (set "
    "CUSTOMERIO_TEST_SITE_ID and CUSTOMERIO_TEST_TRACK_API_KEY, or save one on the "
    "Connections page; BILLBRIDGE_TEST_MODE_EVENTS=deliver sends them to the live workspace)"
)


def _route(settings: Settings, livemode: bool) -> tuple[CioMode | None, str | None]:
    """(workspace, dry-run reason) for an event of this mode; (None, reason) = skip it."""
    if livemode:
        no_credentials = "dry run: Customer.io credentials are not configured"
        return "live", no_credentials if settings.dry_run else None
    route = settings.test_mode_route
    if route == "ignore":
        return None, "test-mode events are ignored (BILLBRIDGE_TEST_MODE_EVENTS=ignore)"
    if route == "dry_run":
        if settings.test_mode_events == "dry_run":
            return "test", "dry run: test-mode event (BILLBRIDGE_TEST_MODE_EVENTS=dry_run)"
        return "test", _NO_TEST_WORKSPACE
    if route == "test":
        return "test", None
    return _route(settings, livemode=True)


def _done(
    claim: ClaimedDelivery,
    status: DeliveryStatus,
    attempt: AttemptRecord,
    error: str | None,
    *,
    sent_ok: bool | None = None,
) -> Completion:
    return Completion(
        delivery_id=claim.delivery_id,
        claim_id=claim.claim_id,
        status=status,
        attempt=attempt,
        error=error,
        sent_ok=sent_ok,
    )


def _skip(claim: ClaimedDelivery, started: float, reason: str) -> Completion:
    """Finished without calling Customer.io; the reason is kept as an attempt."""
    return _done(claim, "skipped", _attempt("skipped", None, started, error=reason), reason)


def _attempt(
    outcome: AttemptOutcome,
    request: CioRequest | None,
    started: float,
    exc: DeliveryError | None = None,
    *,
    error: str | None = None,
    late: LateDecision | None = None,
) -> AttemptRecord:
    body = exc.response_body if exc is not None else None
    return AttemptRecord(
        outcome=outcome,
        started_at=started,
        duration_ms=(time.time() - started) * 1000,
        request=summary_with_late(request, late) if request is not None else None,
        response_status=exc.status_code if exc is not None else None,
        response_body=body[:_BODY_KEEP] if body else None,
        error=error if error is not None else (str(exc) if exc is not None else None),
    )


def _batch_attempt(
    outcome: AttemptOutcome,
    operation: dict[str, Any],
    batch_size: int,
    started: float,
    *,
    status: int | None,
    error: str | None,
    late: LateDecision | None = None,
) -> AttemptRecord:
    """The attempt of one delivery sent inside a v2 batch: its own operation, the batch size."""
    request: dict[str, Any] = {
        "api": "track",
        "method": "POST",
        "path": "/api/v2/batch",
        "operation": operation,
        "batch_size": batch_size,
    }
    if late is not None:
        request["late"] = late.marker()
    return AttemptRecord(
        outcome=outcome,
        started_at=started,
        duration_ms=(time.time() - started) * 1000,
        request=request,
        response_status=status,
        error=error,
    )
