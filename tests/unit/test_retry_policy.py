"""The retry policy: schedule, jitter bounds, Retry-After, throttling floor, window, terminal."""

from __future__ import annotations

import pytest

from billbridge.config import Settings
from billbridge.delivery.retry import RetryPolicy
from billbridge.errors import (
    AmbiguousSendError,
    RetryableDeliveryError,
    TerminalDeliveryError,
)

POLICY = RetryPolicy(schedule=(5, 30, 120), window=1000, jitter=0.1)


@pytest.mark.parametrize(("attempts", "base"), [(1, 5), (2, 30), (3, 120), (4, 120), (50, 120)])
def test_wait_follows_the_schedule_and_repeats_the_last_step(attempts: int, base: float) -> None:
    """Attempt n waits schedule[n-1] seconds (+-10 % jitter); past the end the last repeats."""
    for _ in range(50):
        wait = POLICY.wait_before_next(attempts, RetryableDeliveryError("x", status_code=503))
        assert base * 0.9 <= wait <= base * 1.1


def test_jitter_spreads_the_waits() -> None:
    """Two deliveries failing together do not come back at the same instant."""
    waits = {POLICY.wait_before_next(2) for _ in range(20)}
    assert len(waits) > 1


def test_retry_after_raises_the_wait_but_is_capped() -> None:
    """Retry-After longer than the schedule wins; an absurd one is capped at 6 h."""
    error = RetryableDeliveryError("slow down", status_code=429, retry_after=90)
    assert POLICY.wait_before_next(1, error) == 90
    huge = RetryableDeliveryError("slow down", status_code=429, retry_after=10**9)
    assert POLICY.wait_before_next(1, huge) == POLICY.max_retry_after


def test_throttling_and_timeouts_wait_at_least_the_floor() -> None:
    """A 429 without Retry-After or a timeout never retries sooner than one second."""
    fast = RetryPolicy(schedule=(0.01,), window=100)
    assert fast.wait_before_next(1, RetryableDeliveryError("429", status_code=429)) >= 1.0
    assert fast.wait_before_next(1, RetryableDeliveryError("timeout")) >= 1.0
    assert fast.wait_before_next(1, RetryableDeliveryError("500", status_code=500)) < 1.0


def test_terminal_errors_never_retry() -> None:
    """A 400 fails at once and keeps Customer.io's reason."""
    decision = POLICY.decide(
        TerminalDeliveryError("Customer.io answered 400: name is required", status_code=400),
        attempts_made=1,
        now=0,
        deadline=1000,
    )
    assert not decision.retry
    assert "name is required" in decision.reason


def test_retryable_error_retries_until_the_window_ends() -> None:
    """Inside the window: retry after the scheduled wait; past it: fail, saying why."""
    error = RetryableDeliveryError("503", status_code=503)
    inside = POLICY.decide(error, attempts_made=1, now=0, deadline=1000)
    assert inside.retry
    assert 4.5 <= inside.delay <= 5.5
    outside = POLICY.decide(error, attempts_made=3, now=990, deadline=1000)
    assert not outside.retry
    assert "retry window" in outside.reason


def test_ambiguous_send_is_a_retryable_error_for_the_policy() -> None:
    """The executor decides what to do with an ambiguous send; the policy sees a retryable one."""
    decision = POLICY.decide(AmbiguousSendError("timed out"), attempts_made=1, now=0, deadline=99)
    assert decision.retry


def test_policy_reads_the_environment_settings() -> None:
    """BILLBRIDGE_RETRY_SCHEDULE and BILLBRIDGE_RETRY_WINDOW become the policy."""
    settings = Settings(BILLBRIDGE_RETRY_SCHEDULE="1,2,3", BILLBRIDGE_RETRY_WINDOW="60")
    policy = RetryPolicy.from_settings(settings)
    assert policy.schedule == (1.0, 2.0, 3.0)
    assert policy.window == 60.0


def test_default_schedule_is_the_documented_one() -> None:
    """About 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, 4 h, then every 8 h, for 72 h."""
    settings = Settings()
    assert settings.retry_schedule == (5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800)
    assert settings.retry_window == 259_200
