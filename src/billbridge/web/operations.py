"""Operations the JSON API and the CLI share: replays with a report, and duration parsing.

    report = replay_event_report(store, "evt_123", force=False, retry_window=259_200)
    report.replayed, report.skipped_sent          # delivery ids
    parse_duration("2h")                          # 7200.0 seconds

Synchronous (they call the store): async callers run them in a worker thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from billbridge.store.base import Store
from billbridge.store.records import EventFilter

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


@dataclass(frozen=True)
class ReplayReport:
    """What replaying one event did."""

    stripe_event_id: str
    replayed: list[int]  # delivery ids made due now
    skipped_sent: list[int]  # non-idempotent sends that already succeeded, not forced


def replay_event_report(
    store: Store, stripe_event_id: str, *, force: bool, retry_window: float
) -> ReplayReport:
    """Replay every delivery of the event and wake the workers. Unknown id: KeyError."""
    before = store.get_event(stripe_event_id)
    if before is None:
        raise KeyError(stripe_event_id)
    replayed = store.replay_event(stripe_event_id, force=force, retry_window=retry_window)
    reset = set(replayed)
    # The store leaves a successful non-idempotent send alone unless forced; name those
    # so the caller can say why and how to send again.
    skipped = [
        delivery.delivery_id
        for delivery in before.deliveries
        if delivery.sent_ok and not force and delivery.delivery_id not in reset
    ]
    if replayed:
        store.notify_work()
    return ReplayReport(stripe_event_id, sorted(replayed), sorted(skipped))


def replay_failed_report(
    store: Store,
    *,
    since_seconds: float | None,
    event_type: str | None,
    retry_window: float,
    event_filter: EventFilter | None = None,
) -> list[int]:
    """Replay failed deliveries of events received in the last `since_seconds` (all when
    None), optionally of one event type, or matching `event_filter` (the dashboard's
    search); wakes the workers. Returns the delivery ids."""
    since = None if since_seconds is None else store.now() - since_seconds
    if event_filter is None:
        event_filter = EventFilter(type=event_type)
    elif event_type is not None:
        event_filter = replace(event_filter, type=event_type)
    replayed = store.replay_failed(
        since=since, event_filter=event_filter, retry_window=retry_window
    )
    if replayed:
        store.notify_work()
    return sorted(replayed)
