"""Read-side SQL of the store (filters, derived event status, stats) and row -> record mapping."""

from __future__ import annotations

import json
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billbridge.compact_json import compact_json_text
from billbridge.store.records import (
    DUE_STATUSES,
    AttemptOutcome,
    AttemptRecord,
    AttemptView,
    ClaimedDelivery,
    CustomerRecord,
    DeliveryStatus,
    DeliveryView,
    EventDetail,
    EventFilter,
    EventSource,
    EventStatus,
    EventSummary,
    HourlyVolume,
    StoreStats,
    WorkflowRecord,
)
from billbridge.store.tables import attempts, deliveries, events

# An event shows its worst delivery: failed > retrying > pending > dry_run > succeeded >
# skipped; no delivery at all = "ignored".
STATUS_RANK: dict[str, int] = {
    "failed": 6,
    "retrying": 5,
    "pending": 4,
    "dry_run": 3,
    "succeeded": 2,
    "skipped": 1,
}
RANK_STATUS: dict[int, EventStatus] = {
    6: "failed",
    5: "retrying",
    4: "pending",
    3: "dry_run",
    2: "succeeded",
    1: "skipped",
}

# A result row, read by column name (Row's generic parameters differ between 2.0 and 2.1).
DbRow = Any

CLAIM_COLUMNS = (
    deliveries.c.id,
    deliveries.c.claim_id,
    deliveries.c.event_id,
    deliveries.c.stripe_event_id,
    deliveries.c.workflow_id,
    deliveries.c.action_index,
    deliveries.c.action_type,
    deliveries.c.status,
    deliveries.c.attempt_count,
    deliveries.c.deadline_at,
    deliveries.c.force,
    deliveries.c.sent_ok,
)


CLAIM_EVENT_COLUMNS = (
    events.c.id,
    events.c.type,
    events.c.livemode,
    events.c.created,
    events.c.payload,
)


def _status_rank() -> sa.ScalarSelect[Any]:
    """Correlated: the rank of the worst delivery of the outer `events` row (NULL if none)."""
    inner = deliveries.alias("ds")
    rank = sa.case(STATUS_RANK, value=inner.c.status, else_=0)
    return (
        sa.select(sa.func.max(rank))
        .where(inner.c.event_id == events.c.id)
        .correlate(events)
        .scalar_subquery()
    )


def _delivery_count() -> sa.ScalarSelect[Any]:
    inner = deliveries.alias("dc")
    return (
        sa.select(sa.func.count())
        .select_from(inner)
        .where(inner.c.event_id == events.c.id)
        .correlate(events)
        .scalar_subquery()
    )


def event_conditions(event_filter: EventFilter) -> list[sa.ColumnElement[bool]]:
    """WHERE conditions on `events` for a filter, all evaluated by the database."""
    conditions: list[sa.ColumnElement[bool]] = []
    if event_filter.type:
        conditions.append(events.c.type == event_filter.type)
    if event_filter.customer:
        conditions.append(
            sa.or_(
                events.c.customer_id == event_filter.customer,
                events.c.email == event_filter.customer,
            )
        )
    if event_filter.email:
        conditions.append(events.c.email == event_filter.email)
    if event_filter.since is not None:
        conditions.append(events.c.received_at >= event_filter.since)
    if event_filter.until is not None:
        conditions.append(events.c.received_at <= event_filter.until)
    if event_filter.status == "ignored":
        inner = deliveries.alias("di")
        conditions.append(~sa.exists(sa.select(inner.c.id).where(inner.c.event_id == events.c.id)))
    elif event_filter.status is not None:
        if event_filter.status not in STATUS_RANK:
            raise ValueError(f"unknown event status {event_filter.status!r}")
        conditions.append(_status_rank() == STATUS_RANK[event_filter.status])
    return conditions


# The replay rule ------------------------------------------------------------------------
# A replay must never repeat a transactional email or broadcast that may already have
# reached the person: one whose earlier send succeeded (`sent_ok`) or ended with an
# unknown outcome (an attempt recorded as "unknown": it timed out after the request went
# out). Those are held back unless the replay is forced. Both marks are only ever set for
# non-idempotent calls (send_email, trigger_broadcast), so the rule needs no action list.
# Every replay UPDATE adds `~replay_holds_back()` to its WHERE when not forced; reports
# read `replay_hold_reason()`.


def _unknown_outcome() -> sa.Exists:
    """Correlated: the outer `deliveries` row has an attempt whose outcome is unknown."""
    return sa.exists().where(
        attempts.c.delivery_id == deliveries.c.id, attempts.c.outcome == "unknown"
    )


def replay_holds_back() -> sa.ColumnElement[bool]:
    """True for a delivery a replay must leave alone unless forced (see above)."""
    return sa.or_(deliveries.c.sent_ok.is_(True), _unknown_outcome())


def replay_hold_reason() -> sa.ColumnElement[Any]:
    """Why a held-back delivery is held back: "sent" or "unknown" (NULL otherwise)."""
    return sa.case(
        (deliveries.c.sent_ok.is_(True), sa.literal("sent")),
        (_unknown_outcome(), sa.literal("unknown")),
        else_=sa.null(),
    )


def summary_select() -> sa.Select[Any]:
    return sa.select(
        events.c.id,
        events.c.stripe_event_id,
        events.c.type,
        events.c.livemode,
        events.c.created,
        events.c.received_at,
        events.c.customer_id,
        events.c.email,
        events.c.object_id,
        events.c.source,
        _status_rank().label("status_rank"),
        _delivery_count().label("delivery_count"),
    )


def encode_cursor(event_id: int) -> str:
    return str(event_id)


def decode_cursor(cursor: str) -> int:
    """The event id of a cursor; ValueError unless it is one (a 64-bit row id)."""
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 19) or int(cursor) >= 2**63:
        raise ValueError("invalid cursor: pass back the next_cursor of a previous page")
    return int(cursor)


def event_summary(row: DbRow) -> EventSummary:
    rank = row.status_rank
    return EventSummary(
        event_id=int(row.id),
        stripe_event_id=row.stripe_event_id,
        type=row.type,
        livemode=bool(row.livemode),
        created=int(row.created),
        received_at=float(row.received_at),
        customer_id=row.customer_id,
        email=row.email,
        object_id=row.object_id,
        source=cast(EventSource, row.source),
        status=RANK_STATUS.get(int(rank), "ignored") if rank is not None else "ignored",
        deliveries=int(row.delivery_count),
    )


def attempt_values(delivery_id: int, attempt: AttemptRecord) -> dict[str, Any]:
    return {
        "delivery_id": delivery_id,
        "outcome": attempt.outcome,
        "started_at": attempt.started_at,
        "duration_ms": attempt.duration_ms,
        "request": None if attempt.request is None else compact_json_text(attempt.request),
        "response_status": attempt.response_status,
        "response_body": attempt.response_body,
        "error": attempt.error,
    }


def claimed_delivery(row: DbRow, event_row: DbRow) -> ClaimedDelivery:
    return ClaimedDelivery(
        delivery_id=int(row.id),
        claim_id=row.claim_id,
        event_id=int(row.event_id),
        stripe_event_id=row.stripe_event_id,
        event_type=event_row.type,
        livemode=bool(event_row.livemode),
        event_created=int(event_row.created),
        payload=event_row.payload,
        workflow_id=row.workflow_id,
        action_index=int(row.action_index),
        action_type=row.action_type,
        status=cast(DeliveryStatus, row.status),
        attempt_count=int(row.attempt_count),
        deadline_at=float(row.deadline_at),
        force=bool(row.force),
        sent_ok=bool(row.sent_ok),
    )


def load_event_detail(conn: Connection, stripe_event_id: str) -> EventDetail | None:
    """The event, its deliveries (by id) and their attempts (oldest first), one snapshot."""
    row = conn.execute(
        summary_select()
        .add_columns(
            events.c.api_version,
            events.c.account,
            events.c.payload,
            events.c.pruned_at,
            events.c.pruned_reason,
        )
        .where(events.c.stripe_event_id == stripe_event_id)
    ).first()
    if row is None:
        return None
    delivery_rows = conn.execute(
        sa.select(deliveries).where(deliveries.c.event_id == row.id).order_by(deliveries.c.id)
    ).all()
    by_delivery: dict[int, list[AttemptView]] = {int(d.id): [] for d in delivery_rows}
    if by_delivery:
        attempt_rows = conn.execute(
            sa.select(attempts)
            .where(attempts.c.delivery_id.in_(list(by_delivery)))
            .order_by(attempts.c.id)
        )
        for a in attempt_rows:
            by_delivery[int(a.delivery_id)].append(
                AttemptView(
                    attempt_id=int(a.id),
                    delivery_id=int(a.delivery_id),
                    outcome=cast(AttemptOutcome, a.outcome),
                    started_at=float(a.started_at),
                    duration_ms=float(a.duration_ms),
                    request=None if a.request is None else json.loads(a.request),
                    response_status=a.response_status,
                    response_body=a.response_body,
                    error=a.error,
                )
            )
    views = tuple(
        DeliveryView(
            delivery_id=int(d.id),
            event_id=int(d.event_id),
            stripe_event_id=d.stripe_event_id,
            workflow_id=d.workflow_id,
            action_index=int(d.action_index),
            action_type=d.action_type,
            status=cast(DeliveryStatus, d.status),
            attempt_count=int(d.attempt_count),
            next_attempt_at=None if d.next_attempt_at is None else float(d.next_attempt_at),
            last_error=d.last_error,
            created_at=float(d.created_at),
            updated_at=float(d.updated_at),
            sent_ok=bool(d.sent_ok),
            attempts=tuple(by_delivery[int(d.id)]),
        )
        for d in delivery_rows
    )
    return EventDetail(
        summary=event_summary(row),
        api_version=row.api_version,
        account=row.account,
        payload=row.payload,
        deliveries=views,
        pruned_at=None if row.pruned_at is None else float(row.pruned_at),
        pruned_reason=row.pruned_reason,
    )


def load_stats(conn: Connection, now: float) -> StoreStats:
    by_status = {
        str(status): int(count)
        for status, count in conn.execute(
            sa.select(deliveries.c.status, sa.func.count()).group_by(deliveries.c.status)
        )
    }
    due_count, oldest_due = conn.execute(
        sa.select(sa.func.count(), sa.func.min(deliveries.c.next_attempt_at)).where(
            deliveries.c.status.in_(DUE_STATUSES), deliveries.c.next_attempt_at <= now
        )
    ).one()
    by_outcome = {
        str(outcome): int(count)
        for outcome, count in conn.execute(
            sa.select(attempts.c.outcome, sa.func.count()).group_by(attempts.c.outcome)
        )
    }
    events_total = conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one()
    last_received = conn.execute(
        sa.select(events.c.received_at).order_by(events.c.id.desc()).limit(1)
    ).scalar_one_or_none()
    return StoreStats(
        queue_depth=sum(by_status.get(status, 0) for status in DUE_STATUSES),
        due_now=int(due_count),
        oldest_pending_age=max(0.0, now - float(oldest_due)) if oldest_due is not None else 0.0,
        deliveries_by_status=by_status,
        attempts_by_outcome=by_outcome,
        events_total=int(events_total),
        last_event_received_at=None if last_received is None else float(last_received),
    )


HOUR = 3600.0  # seconds


def first_event_id_since(conn: Connection, since: float) -> int | None:
    """The smallest event row id received at or after `since`, found by binary search on
    the primary key (ids grow in received order; `received_at` has no index), or None."""
    low, high = conn.execute(sa.select(sa.func.min(events.c.id), sa.func.max(events.c.id))).one()
    if high is None:
        return None
    lo, hi = int(low), int(high) + 1  # the answer is in [lo, hi); hi = none
    while lo < hi:
        mid = (lo + hi) // 2
        row = conn.execute(
            sa.select(events.c.id, events.c.received_at)
            .where(events.c.id >= mid)
            .order_by(events.c.id)
            .limit(1)
        ).first()
        if row is None or float(row.received_at) >= since:
            hi = mid
        else:
            lo = int(row.id) + 1
    return lo if lo <= int(high) else None


def load_hourly_volume(conn: Connection, now: float, hours: int) -> list[HourlyVolume]:
    """`hours` buckets, oldest first, the last one holding the current hour."""
    current = now - now % HOUR
    start = current - (hours - 1) * HOUR
    counts: dict[float, list[int]] = {start + i * HOUR: [0, 0, 0, 0] for i in range(hours)}
    first_id = first_event_id_since(conn, start)
    if first_id is not None:
        rows = conn.execute(
            sa.select(events.c.id, events.c.received_at, deliveries.c.status)
            .select_from(events.outerjoin(deliveries, deliveries.c.event_id == events.c.id))
            .where(events.c.id >= first_id, events.c.received_at >= start)
        )
        seen: set[int] = set()
        for row in rows:
            bucket = counts.get(float(row.received_at) - float(row.received_at) % HOUR)
            if bucket is None:  # received "in the future" by a skewed clock
                continue
            if int(row.id) not in seen:
                seen.add(int(row.id))
                bucket[0] += 1
            if row.status in ("succeeded", "dry_run"):
                bucket[1] += 1
            elif row.status == "failed":
                bucket[2] += 1
            elif row.status is not None:
                bucket[3] += 1
    return [HourlyVolume(hour, *values) for hour, values in counts.items()]


def customer_record(row: DbRow) -> CustomerRecord:
    return CustomerRecord(
        stripe_customer_id=row.stripe_customer_id,
        email=row.email,
        name=row.name,
        created=None if row.created is None else int(row.created),
        metadata=json.loads(row.metadata),
        deleted=bool(row.deleted),
        livemode=None if row.livemode is None else bool(row.livemode),
        watermark=int(row.watermark),
    )


def workflow_record(row: DbRow) -> WorkflowRecord:
    return WorkflowRecord(
        workflow_id=row.workflow_id,
        name=row.name,
        enabled=bool(row.enabled),
        definition=json.loads(row.definition),
        version=int(row.version),
        created_at=float(row.created_at),
        updated_at=float(row.updated_at),
    )
