"""Operations the JSON API and the CLI share: replays with a report, and duration parsing.

    report = replay_event_report(store, "evt_123", force=False, retry_window=259_200)
    report.replayed, report.held_back             # delivery ids; HeldBack records
    parse_duration("2h")                          # 7200.0 seconds

Synchronous (they call the store): async callers run them in a worker thread.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from billbridge.store.base import Store
from billbridge.store.records import EventFilter
from billbridge.store.records_ops import HeldBack, HoldReason

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(text: str) -> float:
    """Seconds in `30s`, `30m`, `2h`, `1d`, `1w` or a bare number of seconds.

    Raises ValueError with a message that shows the accepted forms.
    """
    match = _DURATION.match(text.lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration: use e.g. 90s, 30m, 2h, 1d or 1w")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


HOLD_REASONS: dict[HoldReason, str] = {
    "sent": "its earlier send succeeded",
    "unknown": (
        "its earlier send timed out after the request went out, so Customer.io may have "
        "sent it (outcome unknown)"
    ),
}


@dataclass(frozen=True)
class ReplayReport:
    """What replaying one event did."""

    stripe_event_id: str
    replayed: list[int]  # delivery ids made due now
    held_back: list[HeldBack]  # emails and broadcasts left alone (not forced)

    @property
    def skipped_sent(self) -> list[int]:
        """Held back because their earlier send succeeded (the API's `skipped_sent`)."""
        return [held.delivery_id for held in self.held_back if held.reason == "sent"]


@dataclass(frozen=True)
class ReplayFailedReport:
    """What replaying failed deliveries did."""

    replayed: list[int]
    held_back: list[HeldBack]


def held_back_counts(held_back: Sequence[HeldBack]) -> dict[HoldReason, int]:
    """How many were held back for each reason ("sent", "unknown"; zeros included)."""
    counts: dict[HoldReason, int] = {"sent": 0, "unknown": 0}
    for held in held_back:
        counts[held.reason] += 1
    return counts


def held_back_notice(sent: int, unknown: int, *, bulk: bool) -> str | None:
    """One sentence for people: how many were held back, why, and how to send anyway."""
    total = sent + unknown
    if not total:
        return None
    reasons = []
    if sent:
        reasons.append(f"{sent} already sent")
    if unknown:
        reasons.append(f"{unknown} with an unknown outcome (timed out after sending)")
    how = (
        "replay their events one by one with “Replay and send again” (--force, force=true) "
        "if the person should get them twice"
        if bulk
        else "use “Replay and send again” (--force, force=true) if the person should get them twice"
    )
    noun = "email or broadcast" if total == 1 else "emails or broadcasts"
    return f"Held back {total} transactional {noun}, not sent again: {', '.join(reasons)}; {how}."


def replay_event_report(
    store: Store, stripe_event_id: str, *, force: bool, retry_window: float
) -> ReplayReport:
    """Replay every delivery of the event and wake the workers. Unknown id: KeyError.

    Emails and broadcasts that were or may have been sent are held back unless `force`
    (the store's rule, `queries.replay_holds_back`); the report names them and why."""
    replayed = store.replay_event(stripe_event_id, force=force, retry_window=retry_window)
    held_back = [] if force else store.held_back_for_event(stripe_event_id)
    if replayed:
        store.notify_work()
    return ReplayReport(stripe_event_id, sorted(replayed), held_back)


def replay_failed_report(
    store: Store,
    *,
    since_seconds: float | None,
    event_type: str | None,
    retry_window: float,
    event_filter: EventFilter | None = None,
) -> ReplayFailedReport:
    """Replay failed deliveries of events received in the last `since_seconds` (all when
    None), optionally of one event type, or matching `event_filter` (the dashboard's
    search); wakes the workers. Never forced: emails and broadcasts that were or may have
    been sent stay failed and are listed in `held_back`."""
    since = None if since_seconds is None else store.now() - since_seconds
    if event_filter is None:
        event_filter = EventFilter(type=event_type)
    elif event_type is not None:
        event_filter = replace(event_filter, type=event_type)
    replayed = store.replay_failed(
        since=since, event_filter=event_filter, retry_window=retry_window
    )
    held_back = store.held_back_failed(since=since, event_filter=event_filter)
    if replayed:
        store.notify_work()
    return ReplayFailedReport(sorted(replayed), held_back)
