"""What the no_worker and endpoint conditions decide and say, from facts alone."""

from __future__ import annotations

from billbridge.alerts.conditions import Check, Facts, evaluate
from billbridge.alerts.config import AlertConfig
from billbridge.store.records import StoreStats, WorkerRecord
from billbridge.store.records_ops import RetryingSummary
from billbridge.stripe.endpoint_sync import EndpointCheck
from tests.support.dashboard import ALERTS_QUIET

NOW = 1_800_000_000.0
ONLY = ALERTS_QUIET


def _stats(due: int, age: float) -> StoreStats:
    return StoreStats(due, due, age, {}, {}, 0, None)


def _worker(pid: int, silent_for: float, in_flight: int = 0) -> WorkerRecord:
    return WorkerRecord(
        f"h:{pid}:x", "h", pid, "1.0", NOW - 100, NOW - silent_for, in_flight, silent_for
    )


def _check(config: AlertConfig, stats: StoreStats, **facts: object) -> list[Check]:
    base = Facts(
        now=NOW,
        stats=stats,
        retrying=RetryingSummary(0, None),
        recent_failures=[],
        signature_refusals=0,
        last_webhook_at=None,
        endpoint=None,
    )
    return evaluate(config, Facts(**{**base.__dict__, **facts}), retry_window=259_200)


def test_no_worker_fires_only_without_a_live_worker_after_the_grace() -> None:
    """Due deliveries and no live worker fire once the oldest waited `no_worker_seconds`;
    a live worker, nothing due, or a shorter wait do not. Deliveries a silent worker holds
    count as waiting since it went silent."""
    config = AlertConfig(**{**ONLY, "on_no_worker": True, "no_worker_seconds": 30})
    (fired,) = _check(config, _stats(3, 31.0))
    assert fired.firing
    assert "billbridge worker" in " ".join(fired.actions)
    assert not _check(config, _stats(3, 29.0))[0].firing
    assert not _check(config, _stats(0, 0.0))[0].firing
    assert not _check(config, _stats(3, 600.0), live_workers=[_worker(1, 2.0)])[0].firing
    (held,) = _check(config, _stats(0, 0.0), silent_workers=[_worker(7, 40.0, in_flight=5)])
    assert held.firing
    assert "pid 7" in " ".join(held.lines)
    assert "5 more are held" in " ".join(held.lines)
    assert not _check(config, _stats(0, 0.0), silent_workers=[_worker(7, 40.0)])[0].firing


def test_the_endpoint_alert_points_at_sync_or_at_creating_the_endpoint() -> None:
    """Missing types: the message names them and points at `setup-webhook --sync` and the
    overview's Sync button; no endpoint at the URL: at `setup-webhook --url`; unknown
    states (no key, ambiguous) are left out."""
    config = AlertConfig(**{**ONLY, "on_endpoint": True})
    stats = _stats(0, 0.0)
    lacking = EndpointCheck(
        state="out_of_sync",
        needed=("a", "b"),
        endpoint_id="we_1",
        url="https://x/webhooks/stripe",
        missing=("b",),
    )
    (fired,) = _check(config, stats, endpoint=lacking)
    assert fired.firing
    assert "we_1" in fired.lines[0]
    assert fired.lines[0].endswith("need: b")
    assert "billbridge setup-webhook --sync" in fired.actions[0]
    assert "Sync the Stripe endpoint" in fired.actions[0]
    missing = EndpointCheck(state="missing", needed=("a",), url="https://x/webhooks/stripe")
    (none,) = _check(config, stats, endpoint=missing)
    assert "setup-webhook --url https://x/webhooks/stripe" in none.actions[0]
    assert _check(config, stats, endpoint=EndpointCheck(state="unchecked", needed=("a",))) == []
    ambiguous = EndpointCheck(state="ambiguous", needed=("a",), candidates=("we_1", "we_2"))
    assert _check(config, stats, endpoint=ambiguous) == []
