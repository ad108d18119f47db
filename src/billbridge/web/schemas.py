"""Response and request bodies of the JSON API, as pydantic models (they are the OpenAPI schema).

    EventSummaryOut.from_record(summary).model_dump(mode="json")   # API and `events list --json`

Built from the store's records only: nothing here can carry a credential (a request
summary is `CioRequest.summary()`, which holds no headers).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from billbridge.store.records import (
    AttemptOutcome,
    AttemptView,
    DeliveryStatus,
    DeliveryView,
    EventDetail,
    EventSource,
    EventStatus,
    EventSummary,
    WorkerRecord,
)
from billbridge.store.records_ops import HeldBack
from billbridge.web.operations import HOLD_REASONS
from billbridge.workflows.late_events import recorded_policy


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class EventSummaryOut(_Out):
    """One stored Stripe event, as listed."""

    stripe_event_id: str
    type: str
    livemode: bool
    created: int = Field(description="Stripe's event.created, Unix seconds")
    received_at: float = Field(description="when Billbridge stored it, Unix seconds")
    customer_id: str | None
    email: str | None
    object_id: str | None = Field(description="data.object.id")
    source: EventSource
    status: EventStatus = Field(description="the worst status of its deliveries")
    deliveries: int = Field(description="number of deliveries (workflow actions)")

    @classmethod
    def from_record(cls, summary: EventSummary) -> EventSummaryOut:
        return cls(
            stripe_event_id=summary.stripe_event_id,
            type=summary.type,
            livemode=summary.livemode,
            created=summary.created,
            received_at=summary.received_at,
            customer_id=summary.customer_id,
            email=summary.email,
            object_id=summary.object_id,
            source=summary.source,
            status=summary.status,
            deliveries=summary.deliveries,
        )


class EventListOut(_Out):
    """A page of events, newest first; pass `next_cursor` back as `cursor` for the next."""

    items: list[EventSummaryOut]
    next_cursor: str | None


class AttemptOut(_Out):
    """One try of a delivery (oldest first)."""

    time: float = Field(description="when the attempt started, Unix seconds")
    outcome: AttemptOutcome
    request: dict[str, Any] | None = Field(
        description="the Customer.io call: api, method, path, query, body (never credentials)"
    )
    response_status: int | None
    response_body: str | None = Field(description="truncated")
    error: str | None
    duration_ms: float

    @classmethod
    def from_record(cls, attempt: AttemptView) -> AttemptOut:
        return cls(
            time=attempt.started_at,
            outcome=attempt.outcome,
            request=attempt.request,
            response_status=attempt.response_status,
            response_body=attempt.response_body,
            error=attempt.error,
            duration_ms=attempt.duration_ms,
        )


class DeliveryOut(_Out):
    """One (workflow, action) of an event and where it stands."""

    delivery_id: int
    workflow_id: str
    action_index: int
    action: str = Field(description="the action type, e.g. identify or track_event")
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: float | None = Field(description="Unix seconds, while pending or retrying")
    last_error: str | None = Field(description="why it failed, retries or was skipped")
    sent_ok: bool = Field(description="a non-idempotent send of it already succeeded once")
    late_policy: str | None = Field(
        default=None,
        description="the workflow's late_events policy (record, trigger, skip) its latest "
        "attempt applied: set when that event call was sent more than 72 h after Stripe "
        "created the event",
    )
    attempts: list[AttemptOut]

    @classmethod
    def from_record(cls, delivery: DeliveryView) -> DeliveryOut:
        return cls(
            delivery_id=delivery.delivery_id,
            workflow_id=delivery.workflow_id,
            action_index=delivery.action_index,
            action=delivery.action_type,
            status=delivery.status,
            attempt_count=delivery.attempt_count,
            next_attempt_at=delivery.next_attempt_at,
            last_error=delivery.last_error,
            sent_ok=delivery.sent_ok,
            late_policy=recorded_policy(delivery.attempts[-1].request)
            if delivery.attempts
            else None,
            attempts=[AttemptOut.from_record(attempt) for attempt in delivery.attempts],
        )


class EventOut(_Out):
    """`GET /api/events/{id}`: the event (summary fields, api_version, account, payload)."""

    stripe_event_id: str
    type: str
    livemode: bool
    created: int = Field(description="Stripe's event.created, Unix seconds")
    received_at: float = Field(description="when Billbridge stored it, Unix seconds")
    customer_id: str | None
    email: str | None
    object_id: str | None
    source: EventSource
    status: EventStatus
    api_version: str | None
    account: str | None = Field(description="the Connect account, when any")
    payload: dict[str, Any] = Field(
        description="the Stripe event as received (a stub: id, type, created, livemode, "
        "once pruned)"
    )
    deliveries: list[DeliveryOut]
    pruned_at: float | None = Field(
        default=None, description="when the payload and bodies were removed, Unix seconds"
    )
    pruned_reason: str | None = Field(default=None, description="retention or erasure")

    @classmethod
    def from_detail(cls, detail: EventDetail) -> EventOut:
        summary = EventSummaryOut.from_record(detail.summary).model_dump()
        summary.pop("deliveries")
        try:
            payload = json.loads(detail.payload)
        except ValueError:
            payload = {}
        return cls(
            **summary,
            api_version=detail.api_version,
            account=detail.account,
            payload=payload if isinstance(payload, dict) else {},
            deliveries=[DeliveryOut.from_record(delivery) for delivery in detail.deliveries],
            pruned_at=detail.pruned_at,
            pruned_reason=detail.pruned_reason,
        )


class HeldBackOut(_Out):
    """A transactional email or broadcast a replay left alone (it is not sent twice)."""

    delivery_id: int
    stripe_event_id: str
    workflow_id: str
    action_type: str
    reason: Literal["sent", "unknown"] = Field(
        description='"sent": its earlier send succeeded; "unknown": it timed out after the '
        "request went out, so Customer.io may have sent it"
    )
    detail: str = Field(description="the reason in words")

    @classmethod
    def from_record(cls, held: HeldBack) -> HeldBackOut:
        return cls(
            delivery_id=held.delivery_id,
            stripe_event_id=held.stripe_event_id,
            workflow_id=held.workflow_id,
            action_type=held.action_type,
            reason=held.reason,
            detail=HOLD_REASONS[held.reason],
        )


class ReplayOut(_Out):
    """What a replay of one event reset, and what it held back."""

    stripe_event_id: str
    replayed: list[int] = Field(description="delivery ids made due now")
    skipped_sent: list[int] = Field(
        description="non-idempotent sends that already succeeded: replayed only with force=true"
    )
    held_back: list[HeldBackOut] = Field(
        description="emails and broadcasts not replayed because they were or may have been "
        "sent (succeeded, or an unknown outcome): replayed only with force=true"
    )


class ReplayFailedOut(_Out):
    """What a replay of failed deliveries reset, and what it held back."""

    replayed: list[int] = Field(description="delivery ids made due now")
    held_back: list[HeldBackOut] = Field(
        description="failed emails and broadcasts not replayed because they may have been "
        "sent (an unknown outcome, or an earlier success): replay their event with force=true"
    )


class WorkflowListOut(_Out):
    """Every stored valid workflow, by name."""

    items: list[dict[str, Any]] = Field(description="workflow definitions (see Workflow)")


class WorkflowTestIn(BaseModel):
    """What to dry-run a workflow on: give at most one; default is a sample of its first
    trigger event type."""

    model_config = ConfigDict(extra="forbid")

    event_type: str | None = Field(default=None, description="build a sample of this type")
    stripe_event_id: str | None = Field(default=None, description="a stored event")
    event: dict[str, Any] | None = Field(default=None, description="a raw Stripe event")


class PlannedRequestOut(_Out):
    """The Customer.io call one action would make (nothing is sent)."""

    action_index: int
    action: str
    status: Literal["planned", "skipped", "error"]
    request: dict[str, Any] | None = Field(description="CioRequest.summary(), when planned")
    reason: str | None = Field(description="why it is skipped or failed")


class TestEventOut(_Out):
    id: str | None
    type: str | None


class PersonOut(_Out):
    identifier: str
    customer_id: str | None
    email: str | None


class WorkflowTestOut(_Out):
    """A dry run: the event used, the person resolved, and each action's request."""

    event: TestEventOut
    person: PersonOut | None
    requests: list[PlannedRequestOut]


class WorkerOut(_Out):
    worker_id: str = Field(description="What its claims carry: host:pid:random")
    host: str
    pid: int
    version: str = Field(description="The Billbridge version it runs")
    started_at: float = Field(description="Unix seconds (database clock)")
    last_beat_at: float = Field(description="Unix seconds of its last heartbeat")
    seconds_since_beat: float
    in_flight: int = Field(description="Deliveries claimed and not yet recorded at that beat")
    alive: bool = Field(
        description="Beat within the last 9 s; a silent worker's claims are "
        "taken over at the next heartbeat of a live one"
    )

    @classmethod
    def from_record(cls, record: WorkerRecord, *, alive: bool) -> WorkerOut:
        return cls(
            worker_id=record.worker_id,
            host=record.host,
            pid=record.pid,
            version=record.version,
            started_at=record.started_at,
            last_beat_at=record.beat_at,
            seconds_since_beat=round(record.silent_for, 3),
            in_flight=record.in_flight,
            alive=alive,
        )


class WorkerListOut(_Out):
    alive: int = Field(description="How many workers are alive")
    workers: list[WorkerOut] = Field(description="Alive ones first, then silent ones")


class ErrorOut(_Out):
    detail: str


class PrunedOut(_Out):
    detail: str
    reason: str = Field(description="retention or erasure", examples=["retention"])


class ValidationErrorOut(_Out):
    detail: str = Field(examples=["invalid workflow"])
    errors: dict[str, str] = Field(description="field path -> what is wrong")
