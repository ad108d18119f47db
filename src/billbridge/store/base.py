"""The one storage interface both drivers (SQLite, PostgreSQL) implement.

Every method is synchronous and thread-safe; async callers run them in a worker thread
(`anyio.to_thread.run_sync`). Times are Unix seconds as floats, taken from the database
clock for leases and schedules so that several hosts agree.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import anyio

from billbridge.store.records import (
    AttemptRecord,
    ClaimedDelivery,
    Completion,
    CustomerRecord,
    DeliveryStatus,
    EventDetail,
    EventFilter,
    EventSummary,
    HourlyVolume,
    IngestResult,
    NewDelivery,
    NewEvent,
    StoreStats,
    WorkerInfo,
    WorkerRecord,
    WorkflowRecord,
)
from billbridge.store.records_access import (
    AlertStateRecord,
    ApiTokenRecord,
    FailedDeliveries,
    SessionRecord,
    ThrottleLimit,
    UserRecord,
)
from billbridge.store.records_billing import (
    BillingRow,
    BillingState,
    CustomerSnapshot,
    DiscoveredFacts,
)
from billbridge.store.records_fleet import RateReservation
from billbridge.store.records_ops import HeldBack, RecentAttempt, RetryingSummary
from billbridge.store.records_privacy import ErasureRecord, PersonData


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
        billing: Sequence[BillingRow] = (),
    ) -> IngestResult:
        """Store the event, its deliveries and (optionally) the customer snapshot atomically.

        `billing` rows (the event's objects for the billing projection) are applied in the
        same transaction, under the ordering guard, only when the event is new.

        A duplicate `stripe_event_id` changes nothing and returns `inserted=False`.
        Deliveries get `deadline_at = now + retry_window`. Raises StoreUnavailableError
        when the database cannot take the write; then nothing is stored. Durable on return.
        """

    async def ingest_async(
        self,
        event: NewEvent,
        deliveries: Sequence[NewDelivery],
        customer: CustomerRecord | None = None,
        retry_window: float = 259_200.0,
        billing: Sequence[BillingRow] = (),
    ) -> IngestResult:
        """`ingest` for the event loop: the same transaction, awaited without blocking."""
        return await anyio.to_thread.run_sync(
            lambda: self.ingest(event, deliveries, customer, retry_window, billing)
        )

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
    def finish_many(
        self, completions: Sequence[Completion], facts: DiscoveredFacts | None = None
    ) -> list[bool]:
        """Record several attempts at once, in one transaction: each completion with a
        status acts like `complete`, one without like `reschedule` after `retry_in`.
        `facts` (what deciding them learnt from Stripe) are written in that transaction,
        whether or not the claims still own their deliveries (`record_facts`).
        Returns, for each, whether its claim still owned the delivery."""

    @abstractmethod
    def wait_for_work(self, timeout: float) -> bool:
        """Block until new work may be due (in-process wake-up, or LISTEN/NOTIFY on
        PostgreSQL) or `timeout` seconds pass. Returns True when woken."""

    @abstractmethod
    def notify_work(self) -> None:
        """Wake workers waiting in `wait_for_work`."""

    # Heartbeats ---------------------------------------------------------------------------

    @abstractmethod
    def beat(self, worker: WorkerInfo, in_flight: int, silent_after: float) -> int:
        """Record that `worker` is alive now (database clock) with `in_flight` deliveries,
        registering it on first use. Then free the claims of every other worker silent for
        more than `silent_after` seconds: due at once, their claim ids kept so that a late
        finish of the old owner is refused once another worker claims; those workers are
        forgotten. Returns how many deliveries were freed."""

    @abstractmethod
    def retire_worker(self, worker_id: str) -> int:
        """A worker stopping cleanly: free the claims it still holds and drop its row.
        Returns how many deliveries were freed."""

    @abstractmethod
    def list_workers(self, alive_within: float) -> list[WorkerRecord]:
        """Workers that beat within the last `alive_within` seconds, by host and pid."""

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

    @abstractmethod
    def hourly_volume(self, hours: int = 24) -> list[HourlyVolume]:
        """Events received per hour over the last `hours` hours (the current one last,
        empty hours included) with their deliveries by outcome, for the overview chart."""

    # Customers ----------------------------------------------------------------------------

    @abstractmethod
    def upsert_customer(self, customer: CustomerRecord) -> bool:
        """Insert or update unless the stored watermark is newer; returns whether it wrote."""

    @abstractmethod
    def get_customer(self, stripe_customer_id: str) -> CustomerRecord | None: ...

    # Billing projection -------------------------------------------------------------------

    @abstractmethod
    def apply_billing(self, rows: Sequence[BillingRow]) -> bool:
        """Upsert each row unless the stored one has an order_key at least as great (the
        ordering guard); sticky flags and a missing customer id are filled in anyway.
        Returns whether anything changed."""

    @abstractmethod
    def record_facts(self, facts: DiscoveredFacts) -> None:
        """Write discovered facts in one transaction: customers upserted under their
        watermark, billing rows under the ordering guard (like `upsert_customer` and
        `apply_billing`)."""

    @abstractmethod
    def billing_state(self, customer_id: str) -> BillingState:
        """Every projected object of the customer (refunds and disputes via its charges too)."""

    @abstractmethod
    def customer_snapshots(self, customer_ids: Collection[str]) -> dict[str, CustomerSnapshot]:
        """For every id, its customers-table record and billing state (what `get_customer`
        and `billing_state` would answer), read together with a few queries for all of
        them: the worker reads the customers of a whole batch of deliveries at once."""

    @abstractmethod
    def get_billing_object(self, kind: str, stripe_id: str) -> dict[str, Any] | None:
        """One projected object's columns (`kind` is Stripe's object word), or None."""

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

    # Access (users, sessions, API tokens) -------------------------------------------------

    @abstractmethod
    def save_user(self, username: str, password_hash: str) -> UserRecord:
        """Create the user, or set a new password hash if it exists."""

    @abstractmethod
    def get_user(self, username: str) -> UserRecord | None: ...

    @abstractmethod
    def count_users(self) -> int: ...

    @abstractmethod
    def create_session(
        self, token_hash: str, user_id: int, csrf_token: str, lifetime: float
    ) -> None:
        """A session expiring `lifetime` seconds from now; drops expired sessions."""

    @abstractmethod
    def get_session(self, token_hash: str) -> SessionRecord | None:
        """The unexpired session with that token hash, with its user."""

    @abstractmethod
    def delete_session(self, token_hash: str) -> None: ...

    @abstractmethod
    def delete_user_sessions(self, user_id: int) -> int:
        """Log the user out everywhere (after a password change); returns how many."""

    @abstractmethod
    def create_api_token(self, name: str, token_hash: str, prefix: str) -> ApiTokenRecord: ...

    @abstractmethod
    def list_api_tokens(self) -> list[ApiTokenRecord]:
        """All tokens, revoked ones included, oldest first."""

    @abstractmethod
    def find_api_token(self, token_hash: str) -> ApiTokenRecord | None:
        """The unrevoked token with that hash (and note its use), or None."""

    @abstractmethod
    def revoke_api_token(self, token_id: int) -> bool:
        """Revoke; False when no such unrevoked token."""

    # Credentials and alerts (values arrive encrypted) -------------------------------------

    @abstractmethod
    def get_credentials(self) -> dict[str, str]:
        """Every stored connection's ciphertext, by name."""

    @abstractmethod
    def save_credential(self, name: str, ciphertext: str | None) -> None:
        """Store (or with None delete) one connection's ciphertext."""

    @abstractmethod
    def get_alert_settings(self, key: str) -> str | None: ...

    @abstractmethod
    def save_alert_settings(self, key: str, ciphertext: str) -> None: ...

    @abstractmethod
    def get_alert_state(self, name: str) -> AlertStateRecord | None: ...

    @abstractmethod
    def claim_alert(
        self, name: str, expected_last_sent: float | None, watermark: float, sent_at: float
    ) -> bool:
        """Record a send if `last_sent_at` is still `expected_last_sent` (compare-and-set,
        so that two workers never both send); creates the row on first use."""

    @abstractmethod
    def failed_since(self, watermark: float) -> FailedDeliveries:
        """Deliveries now `failed` whose last change is after `watermark`."""

    # Login throttle (state shared by every process) ---------------------------------------

    @abstractmethod
    def begin_login_attempt(self, limits: Mapping[str, ThrottleLimit]) -> float:
        """In one transaction: 0.0 and the attempt counted as a failure under every key of
        `limits` when each allows it now (`ThrottleLimit.wait`), else the longest wait in
        seconds and nothing changed. Counting before the password is checked means
        concurrent attempts cannot slip through together."""

    @abstractmethod
    def end_login_attempt(self, *, clear: Sequence[str], forgive: Sequence[str]) -> None:
        """A login succeeded: delete the `clear` keys' state and take the counted attempt
        back from each `forgive` key."""

    # Operations: replay reports and alert reads --------------------------------------------

    @abstractmethod
    def held_back_for_event(self, stripe_event_id: str) -> list[HeldBack]:
        """The event's emails and broadcasts a replay leaves alone unless forced: sent, or
        with an unknown outcome (`queries.replay_holds_back`)."""

    @abstractmethod
    def held_back_failed(
        self, *, since: float | None = None, event_filter: EventFilter | None = None
    ) -> list[HeldBack]:
        """The same among failed deliveries of matching events (what `replay_failed` skips)."""

    @abstractmethod
    def retrying_summary(self) -> RetryingSummary:
        """How many deliveries wait for a retry, and the oldest one's deadline."""

    @abstractmethod
    def recent_failed_attempts(self, limit: int = 200) -> list[RecentAttempt]:
        """Among the latest `limit` attempts, those that did not succeed, newest first."""

    @abstractmethod
    def last_webhook_received_at(self) -> float | None:
        """When the newest event that came in through the webhook was received."""

    @abstractmethod
    def add_alert_count(self, name: str, count: int) -> None:
        """Add `count` to this minute's `name` count (shared by every process)."""

    @abstractmethod
    def alert_count_since(self, name: str, since: float) -> int:
        """The sum of `name`'s counts from the minute holding `since` on."""

    # Shared by the fleet ------------------------------------------------------------------

    @abstractmethod
    def reserve_rate(
        self, name: str, count: int, interval: float, max_wait: float
    ) -> RateReservation:
        """Reserve `count` calls of the rate `name` (one call per `interval` seconds),
        shared by every process on this database, in one statement on the database clock.
        Refused (nothing reserved) when the first free slot is over `max_wait` seconds away;
        the row is created on first use."""

    # Retention and erasure (store/sql_privacy.py) -----------------------------------------

    @abstractmethod
    def claim_turn(self, key: str, interval: float) -> bool:
        """True for one caller per `interval` seconds across the fleet (meta row `key`)."""

    @abstractmethod
    def prune_events(self, older_than: float, limit: int) -> int:
        """Stub the payloads of up to `limit` events received more than `older_than`
        seconds ago whose deliveries are all final (attempt bodies cleared, errors
        redacted, `pruned_at` set); how many were pruned."""

    @abstractmethod
    def scrub_finished_erasures(self, limit: int) -> int:
        """Stub up to `limit` erasure events whose Customer.io action is done."""

    @abstractmethod
    def find_person(self, *, customer_id: str | None, email: str | None) -> PersonData:
        """The customers, emails and names stored for a customer id or an email."""

    @abstractmethod
    def erase_events(self, person: PersonData, limit: int) -> int:
        """Erase the personal data of up to `limit` of the person's events (their unsent
        deliveries skipped); how many. Call until it returns 0."""

    @abstractmethod
    def erase_customers(
        self,
        person: PersonData,
        *,
        matched_by: str,
        matched: str,
        events_erased: int,
        requested_by: str,
        cio_action: str,
        cio_event_ids: Collection[str],
    ) -> int:
        """Delete the person's customers and billing rows and record the erasure (one
        transaction); how many customers were deleted."""

    @abstractmethod
    def list_erasures(self, limit: int = 50) -> list[ErasureRecord]:
        """The recorded erasures, newest first, with their Customer.io action's statuses."""
