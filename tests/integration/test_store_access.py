"""Store methods for users, sessions, API tokens, credentials and alert state, on both drivers."""

from __future__ import annotations

from billbridge.store.base import Store
from tests.integration.test_store_conformance import actions, attempt, claim_all, event


def test_users_are_created_updated_and_counted(store: Store) -> None:
    """save_user creates once, then only replaces the hash; get_user and count_users agree."""
    assert store.count_users() == 0
    created = store.save_user("admin", "$argon2id$first")
    again = store.save_user("admin", "$argon2id$second")
    assert again.user_id == created.user_id
    found = store.get_user("admin")
    assert found is not None
    assert found.password_hash == "$argon2id$second"
    assert store.get_user("nobody") is None
    assert store.count_users() == 1


def test_sessions_expire_and_are_deleted(store: Store) -> None:
    """A live session is found with its user; an expired or deleted one is not."""
    user = store.save_user("admin", "hash")
    store.create_session("a" * 64, user.user_id, "csrf-a", 3600)
    store.create_session("b" * 64, user.user_id, "csrf-b", -1)
    live = store.get_session("a" * 64)
    assert live is not None
    assert (live.username, live.csrf_token) == ("admin", "csrf-a")
    assert store.get_session("b" * 64) is None
    store.delete_session("a" * 64)
    assert store.get_session("a" * 64) is None
    store.create_session("c" * 64, user.user_id, "csrf-c", 3600)
    assert store.delete_user_sessions(user.user_id) == 1
    assert store.get_session("c" * 64) is None


def test_api_tokens_are_found_by_hash_until_revoked(store: Store) -> None:
    """find_api_token matches the hash and notes the use; a revoked token is not found."""
    record = store.create_api_token("ci", "f" * 64, "bb_abcde")
    found = store.find_api_token("f" * 64)
    assert found is not None
    assert found.name == "ci"
    assert store.find_api_token("0" * 64) is None
    listed = store.list_api_tokens()
    assert [t.token_id for t in listed] == [record.token_id]
    assert listed[0].last_used_at is not None
    assert store.revoke_api_token(record.token_id) is True
    assert store.revoke_api_token(record.token_id) is False
    assert store.find_api_token("f" * 64) is None
    assert store.list_api_tokens()[0].revoked_at is not None


def test_credentials_and_alert_settings_round_trip(store: Store) -> None:
    """Ciphertexts are stored per name, replaced, and deleted with None."""
    store.save_credential("stripe", "gAAAA-one")
    store.save_credential("stripe", "gAAAA-two")
    store.save_credential("customerio", "gAAAA-cio")
    assert store.get_credentials() == {"stripe": "gAAAA-two", "customerio": "gAAAA-cio"}
    store.save_credential("stripe", None)
    assert store.get_credentials() == {"customerio": "gAAAA-cio"}
    assert store.get_alert_settings("config") is None
    store.save_alert_settings("config", "gAAAA-alerts")
    assert store.get_alert_settings("config") == "gAAAA-alerts"


def test_alert_claim_is_a_compare_and_set(store: Store) -> None:
    """Only the caller that saw the current last_sent_at may record a send."""
    assert store.get_alert_state("alerts") is None
    assert store.claim_alert("alerts", None, watermark=10.0, sent_at=0.0) is True
    assert store.claim_alert("alerts", None, watermark=11.0, sent_at=0.0) is False
    assert store.claim_alert("alerts", 0.0, watermark=20.0, sent_at=100.0) is True
    assert store.claim_alert("alerts", 0.0, watermark=30.0, sent_at=200.0) is False
    state = store.get_alert_state("alerts")
    assert state is not None
    assert (state.last_sent_at, state.watermark) == (100.0, 20.0)


def test_failed_since_counts_failures_after_the_watermark(store: Store) -> None:
    """Permanently failed deliveries after the watermark are counted per workflow."""
    start = store.now() - 1
    store.ingest(event(1), actions(2, "welcome"))
    store.ingest(event(2), actions(1, "billing"))
    for claim in claim_all(store).values():
        status = (
            "succeeded" if claim.stripe_event_id == "evt_1" and claim.action_index else "failed"
        )
        store.complete(claim.delivery_id, claim.claim_id, status, attempt(), error="boom 400")
    found = store.failed_since(start)
    assert found.count == 2
    assert found.by_workflow == {"welcome": 1, "billing": 1}
    assert found.last_error == "boom 400"
    assert found.newest_at is not None
    assert store.failed_since(found.newest_at).count == 0
