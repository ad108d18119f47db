"""SQL for operations: which deliveries a replay holds back, and the reads alerts need.

A mixin of `SqlStore` (both drivers), on the same hooks as `SqlAccessMixin`. The replay
rule itself is `queries.replay_holds_back()`; this file only reports on it.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billbridge.store import queries
from billbridge.store.records import EventFilter
from billbridge.store.records_ops import HeldBack, RecentAttempt, RetryingSummary
from billbridge.store.sql_hooks import SqlHooks
from billbridge.store.tables import attempts, deliveries, events
from billbridge.store.tables_access import alert_counts

COUNT_BUCKET = 60  # seconds: alert counts are kept per minute
COUNT_KEEP = 86_400.0  # seconds: older buckets are deleted when counts are added
NOT_SUCCEEDED = ("retryable_error", "terminal_error", "unknown")


class SqlOpsMixin(SqlHooks):
    """Replay reports and alert reads of the SQL store."""

    # Replay reports -----------------------------------------------------------------------

    def held_back_for_event(self, stripe_event_id: str) -> list[HeldBack]:
        event_id = (
            sa.select(events.c.id)
            .where(events.c.stripe_event_id == stripe_event_id)
            .scalar_subquery()
        )
        return self._held_back([deliveries.c.event_id == event_id])

    def held_back_failed(
        self, *, since: float | None = None, event_filter: EventFilter | None = None
    ) -> list[HeldBack]:
        conditions = queries.event_conditions(event_filter or EventFilter())
        if since is not None:
            conditions.append(events.c.received_at >= since)
        matching = sa.select(events.c.id).where(*conditions, events.c.pruned_at.is_(None))
        return self._held_back(
            [deliveries.c.status == "failed", deliveries.c.event_id.in_(matching)]
        )

    def _held_back(self, where: list[sa.ColumnElement[bool]]) -> list[HeldBack]:
        reason = queries.replay_hold_reason().label("reason")
        stmt = (
            sa.select(
                deliveries.c.id,
                deliveries.c.stripe_event_id,
                deliveries.c.workflow_id,
                deliveries.c.action_type,
                reason,
            )
            .where(*where, queries.replay_holds_back())
            .order_by(deliveries.c.id)
        )
        rows = self._read(lambda conn: conn.execute(stmt).all())
        return [
            HeldBack(
                delivery_id=int(row.id),
                stripe_event_id=str(row.stripe_event_id),
                workflow_id=str(row.workflow_id),
                action_type=str(row.action_type),
                reason="sent" if row.reason == "sent" else "unknown",
            )
            for row in rows
        ]

    # Alert reads --------------------------------------------------------------------------

    def retrying_summary(self) -> RetryingSummary:
        stmt = sa.select(sa.func.count(), sa.func.min(deliveries.c.deadline_at)).where(
            deliveries.c.status == "retrying"
        )
        count, oldest = self._read(lambda conn: conn.execute(stmt).one())
        return RetryingSummary(int(count), None if oldest is None else float(oldest))

    def recent_failed_attempts(self, limit: int = 200) -> list[RecentAttempt]:
        latest = (
            sa.select(
                attempts.c.id,
                attempts.c.outcome,
                attempts.c.response_status,
                attempts.c.error,
                attempts.c.started_at,
            )
            .order_by(attempts.c.id.desc())
            .limit(limit)
            .subquery()
        )
        stmt = (
            sa.select(latest)
            .where(latest.c.outcome.in_(NOT_SUCCEEDED))
            .order_by(latest.c.id.desc())
        )
        rows = self._read(lambda conn: conn.execute(stmt).all())
        return [
            RecentAttempt(
                outcome=str(row.outcome),
                response_status=None if row.response_status is None else int(row.response_status),
                error=row.error,
                started_at=float(row.started_at),
            )
            for row in rows
        ]

    def last_webhook_received_at(self) -> float | None:
        stmt = (
            sa.select(events.c.received_at)
            .where(events.c.source == "webhook")
            .order_by(events.c.id.desc())
            .limit(1)
        )
        value = self._read(lambda conn: conn.execute(stmt).scalar_one_or_none())
        return None if value is None else float(value)

    def add_alert_count(self, name: str, count: int) -> None:
        if count <= 0:
            return

        def tx(conn: Connection) -> None:
            now = self._db_now(conn)
            bucket = int(now // COUNT_BUCKET) * COUNT_BUCKET
            stmt = self._insert(alert_counts).values(name=name, bucket=bucket, count=count)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[alert_counts.c.name, alert_counts.c.bucket],
                    set_={"count": alert_counts.c.count + stmt.excluded.count},
                )
            )
            conn.execute(sa.delete(alert_counts).where(alert_counts.c.bucket < now - COUNT_KEEP))

        self._write(tx)

    def alert_count_since(self, name: str, since: float) -> int:
        start = int(since // COUNT_BUCKET) * COUNT_BUCKET
        stmt = sa.select(sa.func.coalesce(sa.func.sum(alert_counts.c.count), 0)).where(
            alert_counts.c.name == name, alert_counts.c.bucket >= start
        )
        return int(self._read(lambda conn: conn.execute(stmt).scalar_one()))


__all__ = ["SqlOpsMixin"]
