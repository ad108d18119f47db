"""The store's operations reads on both drivers: what a replay holds back and why, and the
numbers alerts read (retrying deliveries, failed attempts, the last webhook, shared counts)."""

from __future__ import annotations

import pytest

from billbridge.store import open_store
from billbridge.store.base import Store
from billbridge.store.records import NewDelivery
from tests.integration.test_store_conformance import attempt, claim_all, event


def _sends(count: int) -> list[NewDelivery]:
    return [NewDelivery("receipt", i, "send_email") for i in range(count)]


def test_replays_hold_back_sent_and_unknown_sends(store: Store) -> None:
    """A send that succeeded or timed out after sending is held back by replay_event and
    replay_failed (and reported with its reason); a send that failed plainly is replayed."""
    store.ingest(event(1), _sends(3))
    claims = claim_all(store)
    sent, unknown, refused = (claims[("evt_1", i)] for i in range(3))
    store.complete(sent.delivery_id, sent.claim_id, "succeeded", attempt(), sent_ok=True)
    store.complete(unknown.delivery_id, unknown.claim_id, "failed", attempt("unknown", None))
    store.complete(refused.delivery_id, refused.claim_id, "failed", attempt("terminal_error", 400))

    held = {(h.delivery_id, h.reason) for h in store.held_back_failed()}
    assert held == {(unknown.delivery_id, "unknown")}
    assert store.replay_failed() == [refused.delivery_id]
    assert store.replay_event("evt_1") == [refused.delivery_id]
    reasons = {h.delivery_id: h.reason for h in store.held_back_for_event("evt_1")}
    assert reasons == {sent.delivery_id: "sent", unknown.delivery_id: "unknown"}
    assert store.held_back_for_event("evt_none") == []
    forced = store.replay_event("evt_1", force=True)
    assert forced == sorted([sent.delivery_id, unknown.delivery_id, refused.delivery_id])


def test_alert_reads(store: Store) -> None:
    """Retrying deliveries with the oldest deadline, the latest failed attempts newest first,
    and the newest webhook event (reconciled ones do not count)."""
    assert store.retrying_summary().count == 0
    assert store.last_webhook_received_at() is None
    store.ingest(event(1), [NewDelivery("wf", 0, "track_event")])
    store.ingest(event(2, source="reconcile"), [NewDelivery("wf", 0, "track_event")])
    received = store.get_event("evt_1")
    assert received is not None
    assert store.last_webhook_received_at() == received.summary.received_at
    claims = claim_all(store)
    first, second = claims[("evt_1", 0)], claims[("evt_2", 0)]
    store.reschedule(first.delivery_id, first.claim_id, 60.0, attempt("retryable_error", 503))
    store.complete(second.delivery_id, second.claim_id, "failed", attempt("terminal_error", 401))
    summary = store.retrying_summary()
    assert summary.count == 1
    # The claim reads rows through JSON (15 significant digits): equal to the microsecond.
    assert summary.oldest_deadline_at == pytest.approx(first.deadline_at, abs=1e-3)
    assert [a.response_status for a in store.recent_failed_attempts()] == [401, 503]
    assert [a.response_status for a in store.recent_failed_attempts(limit=1)] == [401]


def test_alert_counts_add_up_across_processes(store_url: str) -> None:
    """Counts added through two store connections (two processes) sum up; a later `since`
    leaves earlier minutes out."""
    one, two = open_store(store_url), open_store(store_url)
    try:
        start = one.now()
        one.add_alert_count("signature_refusals", 2)
        two.add_alert_count("signature_refusals", 3)
        two.add_alert_count("other", 7)
        one.add_alert_count("signature_refusals", 0)
        assert one.alert_count_since("signature_refusals", start - 1) == 5
        assert two.alert_count_since("signature_refusals", start + 120) == 0
    finally:
        one.close()
        two.close()
