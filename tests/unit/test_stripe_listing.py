"""The Stripe rate limiter: token bucket arithmetic and 429 backoff bounds."""

from __future__ import annotations

import random

from billbridge.stripe.listing import (
    LIVE_RATE,
    TEST_RATE,
    TokenBucket,
    backoff_delay,
    default_rate,
)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_bucket_allows_the_burst_then_exactly_rate_per_second() -> None:
    """25/s with a burst of 5: 105 acquisitions take 4 s of (fake) sleeping."""
    clock = _Clock()
    bucket = TokenBucket(25, clock=clock, sleep=clock.sleep)
    for _ in range(105):
        bucket.acquire()
    assert abs(clock.now - 4.0) < 1e-6


def test_pause_after_a_429_blocks_everyone_for_that_long() -> None:
    """After pause(2), the next acquisition waits 2 s plus one token's time."""
    clock = _Clock()
    bucket = TokenBucket(10, burst=1, clock=clock, sleep=clock.sleep)
    bucket.acquire()
    bucket.pause(2.0)
    bucket.acquire()
    assert abs(clock.now - 2.1) < 1e-6


def test_default_rate_follows_the_key_mode_and_backoff_is_capped() -> None:
    """Test keys get 25/s, live keys 100/s; backoff stays within [base/2, base], base <= 8 s."""
    assert default_rate("sk_test_abc") == TEST_RATE
    assert default_rate("rk_live_abc") == LIVE_RATE
    rng = random.Random(1)
    assert 0.25 <= backoff_delay(1, rng) <= 0.5
    assert 4.0 <= backoff_delay(10, rng) <= 8.0
