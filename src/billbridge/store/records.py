"""Plain records that cross the storage interface (no ORM objects leave the store)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

DeliveryStatus = Literal["pending", "succeeded", "retrying", "failed", "skipped", "dry_run"]
DELIVERY_STATUSES: tuple[DeliveryStatus, ...] = (
    "pending",
    "succeeded",
    "retrying",
    "failed",
    "skipped",
    "dry_run",
)
DUE_STATUSES: tuple[DeliveryStatus, ...] = ("pending", "retrying")
FINAL_STATUSES: tuple[DeliveryStatus, ...] = ("succeeded", "failed", "skipped", "dry_run")

# What one attempt came to. "unknown" = a non-idempotent send timed out after being sent.
AttemptOutcome = Literal[
    "succeeded", "retryable_error", "terminal_error", "unknown", "dry_run", "skipped"
]

# Event status as shown in lists: derived from its deliveries (worst first), "ignored"
# when the event matched no workflow or test-mode events are ignored.
EventStatus = Literal["failed", "retrying", "pending", "succeeded", "dry_run", "skipped", "ignored"]

EventSource = Literal["webhook", "reconcile", "backfill", "cli", "erasure"]


@dataclass(frozen=True)
class NewEvent:
    """A verified Stripe event about to be stored."""

    stripe_event_id: str
    type: str
    livemode: bool
    created: int  # Stripe's event.created, Unix seconds
    api_version: str | None
    account: str | None  # Connect account, event.account
    object_id: str | None  # data.object.id
    customer_id: str | None  # the Stripe customer the event is about, when the payload says
    email: str | None  # an email found in the payload, when any
    payload: str  # the raw JSON body exactly as received
    source: EventSource = "webhook"


@dataclass(frozen=True)
class NewDelivery:
    """One (workflow, action) a stored event must go through."""

    workflow_id: str
    action_index: int
    action_type: str
    status: DeliveryStatus = "pending"  # "skipped"/"dry_run" when decided at ingest
    reason: str | None = None  # why it was decided at ingest (kept as last_error)


@dataclass(frozen=True)
class CustomerRecord:
    """The local copy of a Stripe customer, fed by customer.* events and API reads."""

    stripe_customer_id: str
    email: str | None
    name: str | None
    created: int | None  # customer.created, Unix seconds
    metadata: dict[str, Any] = field(default_factory=dict)
    deleted: bool = False
    livemode: bool | None = None
    watermark: int = 0  # event.created (or fetch time) of the snapshot; older never overwrites


@dataclass(frozen=True)
class IngestResult:
    inserted: bool  # False: the event id was already stored, nothing changed
    event_id: int  # the store's row id of the (new or existing) event
    deliveries: int  # deliveries created (0 for a duplicate)


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery a worker now owns until `lease_until`, fenced by `claim_id`."""

    delivery_id: int
    claim_id: str
    event_id: int
    stripe_event_id: str
    event_type: str
    livemode: bool
    event_created: int
    payload: str  # the raw Stripe event JSON
    workflow_id: str
    action_index: int
    action_type: str
    status: DeliveryStatus  # status before the claim: pending or retrying
    attempt_count: int  # attempts made before this one
    deadline_at: float  # Unix seconds: after this, retryable errors become failures
    force: bool  # a replay asked to send even if a non-idempotent send already succeeded
    sent_ok: bool  # a non-idempotent call of this delivery already got a 2xx once


@dataclass(frozen=True)
class AttemptRecord:
    """One try of a delivery, appended and never changed."""

    outcome: AttemptOutcome
    started_at: float  # Unix seconds
    duration_ms: float
    request: dict[str, Any] | None  # method, url path, body: never credentials
    response_status: int | None = None
    response_body: str | None = None  # truncated
    error: str | None = None


@dataclass(frozen=True)
class Completion:
    """What one attempt of a claimed delivery came to, ready to be recorded."""

    delivery_id: int
    claim_id: str
    status: DeliveryStatus | None  # a final status, or None: retry after `retry_in`
    attempt: AttemptRecord
    error: str | None = None
    sent_ok: bool | None = None  # True: a non-idempotent call got its 2xx
    retry_in: float | None = None  # seconds, when status is None


@dataclass(frozen=True)
class AttemptView:
    attempt_id: int
    delivery_id: int
    outcome: AttemptOutcome
    started_at: float
    duration_ms: float
    request: dict[str, Any] | None
    response_status: int | None
    response_body: str | None
    error: str | None


@dataclass(frozen=True)
class DeliveryView:
    delivery_id: int
    event_id: int
    stripe_event_id: str
    workflow_id: str
    action_index: int
    action_type: str
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: float | None
    last_error: str | None
    created_at: float
    updated_at: float
    sent_ok: bool
    attempts: tuple[AttemptView, ...] = ()


@dataclass(frozen=True)
class EventSummary:
    event_id: int
    stripe_event_id: str
    type: str
    livemode: bool
    created: int
    received_at: float
    customer_id: str | None
    email: str | None
    object_id: str | None
    source: EventSource
    status: EventStatus
    deliveries: int


@dataclass(frozen=True)
class EventDetail:
    summary: EventSummary
    api_version: str | None
    account: str | None
    payload: str
    deliveries: tuple[DeliveryView, ...]
    pruned_at: float | None = None  # the payload is a stub since then (retention, erasure)
    pruned_reason: str | None = None  # "retention" | "erasure"


@dataclass(frozen=True)
class EventFilter:
    type: str | None = None
    status: EventStatus | None = None
    customer: str | None = None  # a Stripe customer id or an email
    email: str | None = None  # exactly this email
    since: float | None = None  # received_at >= since (Unix seconds)
    until: float | None = None


@dataclass(frozen=True)
class WorkflowRecord:
    workflow_id: str
    name: str
    enabled: bool
    definition: dict[str, Any]  # the validated workflow as JSON-able data
    version: int
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class HourlyVolume:
    """Events received in one hour and what became of their deliveries (for the overview)."""

    hour_start: float  # Unix seconds, a multiple of 3600
    events: int
    succeeded: int  # deliveries succeeded (or dry_run)
    failed: int  # deliveries failed
    other: int  # deliveries pending, retrying or skipped


@dataclass(frozen=True)
class StoreStats:
    queue_depth: int  # deliveries pending or retrying
    due_now: int  # of those, due now
    oldest_pending_age: float  # seconds since the oldest due delivery became due; 0 if none
    deliveries_by_status: dict[str, int]
    attempts_by_outcome: dict[str, int]
    events_total: int
    last_event_received_at: float | None


@dataclass(frozen=True)
class WorkerRecord:
    """A process that claims deliveries, as its last heartbeat left it (database clock)."""

    worker_id: str
    host: str
    pid: int
    version: str
    started_at: float
    beat_at: float  # the last heartbeat
    in_flight: int  # deliveries claimed and not yet recorded at that beat
    silent_for: float  # seconds since the last heartbeat, by the database clock


@dataclass(frozen=True)
class WorkerInfo:
    """Who heartbeats: the worker id its claims carry, and where it runs."""

    worker_id: str
    host: str
    pid: int
    version: str
