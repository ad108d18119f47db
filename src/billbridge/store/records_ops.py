"""Plain records for operations: deliveries a replay holds back, and what alerts read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

HoldReason = Literal["sent", "unknown"]


@dataclass(frozen=True)
class HeldBack:
    """A transactional email or broadcast a replay left alone: its earlier send succeeded
    ("sent") or may have gone out ("unknown": it timed out after the request was sent)."""

    delivery_id: int
    stripe_event_id: str
    workflow_id: str
    action_type: str
    reason: HoldReason


@dataclass(frozen=True)
class RetryingSummary:
    """Deliveries waiting for a retry, and when the oldest of them started trying."""

    count: int
    oldest_deadline_at: float | None  # its deadline; minus the retry window = its start


@dataclass(frozen=True)
class RecentAttempt:
    """One of the latest attempts that did not succeed (for the alert's diagnosis)."""

    outcome: str
    response_status: int | None
    error: str | None
    started_at: float
