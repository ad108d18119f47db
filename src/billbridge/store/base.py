"""The one storage interface both drivers (SQLite, PostgreSQL) implement.

Every method is synchronous and thread-safe; async callers run them in a worker thread
(`anyio.to_thread.run_sync`). Times are Unix seconds as floats, taken from the database
clock for leases and schedules so that several hosts agree.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from billbridge.store.records import (
    AttemptRecord,
    ClaimedDelivery,
    CustomerRecord,
    DeliveryStatus,
    EventDetail,
    EventFilter,
    EventSummary,
    IngestResult,
    NewDelivery,
    NewEvent,
    StoreStats,
    WorkflowRecord,
)


class Store(ABC):
    """Events, deliveries (the queue), attempts, workflows and customers."""

    # Lifecycle --------------------------------------------------------------------------

    @abstractmethod
    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent)."""

    @abstractmethod
    def schema_revisions(self) -> tuple[frozenset[str], frozenset[str]]:
        """(revisions applied to the database, newest revisions shipped): equal when
        migrated; the first is empty for an empty database."""

    @abstractmethod
    def ping(self) -> bool:
        """True when the database answers a trivial query."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and stop background threads."""

    @abstractmethod
    def now(self) -> float:
        """The database clock, Unix seconds."""

    # Ingest (the transactional outbox) ----------------------------------------------------

    @abstractmethod
    def ingest(
        self,
        event: NewEvent,
        deliveries: Sequence[NewDelivery],
        customer: CustomerRecord | None = None,
        retry_window: float = 259_200.0,
    ) -> IngestResult:
        """Store the event, its deliveries and (optionally) the customer snapshot atomically.

        A duplicate `stripe_event_id` changes nothing and returns `inserted=False`.
        Deliveries get `deadline_at = now + retry_window`. Raises StoreUnavailableError
        when the database cannot take the write; then nothing is stored. Durable on return.
        """

    # The queue ----------------------------------------------------------------------------

    @abstractmethod
    def claim_due(self, worker_id: str, limit: int, lease_seconds: float) -> list[ClaimedDelivery]:
        """Claim up to `limit` due deliveries (pending/retrying, next_attempt_at <= now, or
        with an expired lease), oldest due first. Each gets a fresh claim_id and a lease."""

    @abstractmethod
    def complete(
        self,
        delivery_id: int,
        claim_id: str,
        status: DeliveryStatus,
        attempt: AttemptRecord | None,
        *,
        error: str | None = None,
        sent_ok: bool | None = None,
    ) -> bool:
        """Finish a delivery (succeeded, failed, skipped, dry_run) and append the attempt.

        The attempt is always appended (it happened). The delivery row changes only when
        `claim_id` still owns it; returns whether it did (False = fenced out).
        """

    @abstractmethod
    def reschedule(
        self,
        delivery_id: int,
        claim_id: str,
        delay_seconds: float,
        attempt: AttemptRecord,
        *,
        error: str | None = None,
    ) -> bool:
        """Mark the delivery `retrying`, due `delay_seconds` from now; append the attempt."""

    @abstractmethod
    def extend_lease(self, delivery_id: int, claim_id: str, lease_seconds: float) -> bool:
        """Push the lease out while a slow call is still running; False if fenced out."""

    @abstractmethod
    def wait_for_work(self, timeout: float) -> bool:
        """Block until new work may be due (in-process wake-up, or LISTEN/NOTIFY on
        PostgreSQL) or `timeout` seconds pass. Returns True when woken."""

    @abstractmethod
    def notify_work(self) -> None:
        """Wake workers waiting in `wait_for_work`."""

    # Replay -------------------------------------------------------------------------------

    @abstractmethod
    def replay_event(
        self, stripe_event_id: str, *, force: bool = False, retry_window: float = 259_200.0
    ) -> list[int]:
        """Make every delivery of the event due now again (succeeded ones included), each
        with a fresh deadline. A non-idempotent delivery that already got a 2xx (`sent_ok`)
        is reset only when `force` is true. Returns the delivery ids reset. Unknown id:
        KeyError."""

    @abstractmethod
    def replay_failed(
        self,
        *,
        since: float | None = None,
        event_filter: EventFilter | None = None,
        retry_window: float = 259_200.0,
    ) -> list[int]:
        """Make every failed delivery (of events matching the filter, received since
        `since`) due now again. Returns the delivery ids reset."""

    # Reads --------------------------------------------------------------------------------

    @abstractmethod
    def list_events(
        self, event_filter: EventFilter, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[EventSummary], str | None]:
        """Newest first (by received order), keyset-paginated; returns (items, next_cursor)."""

    @abstractmethod
    def get_event(self, stripe_event_id: str) -> EventDetail | None:
        """The event with each delivery and each of its attempts (oldest attempt first)."""

    @abstractmethod
    def stats(self) -> StoreStats:
        """Numbers for /metrics and the overview."""

    # Customers ----------------------------------------------------------------------------

    @abstractmethod
    def upsert_customer(self, customer: CustomerRecord) -> bool:
        """Insert or update unless the stored watermark is newer; returns whether it wrote."""

    @abstractmethod
    def get_customer(self, stripe_customer_id: str) -> CustomerRecord | None: ...

    # Workflows ----------------------------------------------------------------------------

    @abstractmethod
    def list_workflows(self) -> list[WorkflowRecord]:
        """All workflows, by name."""

    @abstractmethod
    def get_workflow(self, workflow_id: str) -> WorkflowRecord | None: ...

    @abstractmethod
    def save_workflow(
        self, workflow_id: str, name: str, enabled: bool, definition: dict[str, Any]
    ) -> WorkflowRecord:
        """Create or replace; bumps `version`."""

    @abstractmethod
    def delete_workflow(self, workflow_id: str) -> bool: ...

    @abstractmethod
    def get_meta(self, key: str) -> str | None:
        """A small key/value table for service state (e.g. defaults seeded)."""

    @abstractmethod
    def set_meta(self, key: str, value: str) -> None: ...
