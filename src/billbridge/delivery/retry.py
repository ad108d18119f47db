"""The retry policy as data: when a failed Customer.io call is tried again, and when it stops.

The wait before attempt n+1 (n attempts made so far) is

    wait = schedule[min(n, len(schedule)) - 1] * uniform(1 - jitter, 1 + jitter)

so with the default schedule 5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800 seconds the
waits are about 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, 4 h, then every 8 h, until
the retry window (72 h by default, counted from when the delivery was created or
replayed) ends: then the delivery fails.

A `Retry-After` from Customer.io raises the wait to that value (never above
`max_retry_after`); a 429 or a timeout waits at least `min_throttle_wait`, even when the
schedule says less. Terminal errors (4xx other than 408/429) never retry.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from billbridge.config import Settings
from billbridge.errors import DeliveryError, RetryableDeliveryError


@dataclass(frozen=True)
class RetryDecision:
    """Either retry after `delay` seconds, or give up with `reason`."""

    retry: bool
    delay: float = 0.0  # seconds
    reason: str = ""


@dataclass(frozen=True)
class RetryPolicy:
    schedule: tuple[float, ...]  # seconds between attempts; the last one repeats
    window: float  # seconds a delivery keeps retrying
    jitter: float = 0.1  # fraction of the wait, up and down
    min_throttle_wait: float = 1.0  # seconds, after a 429 or a timeout
    max_retry_after: float = 21_600.0  # seconds: never wait longer than 6 h for one hint

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(schedule=settings.retry_schedule, window=settings.retry_window)

    def wait_before_next(self, attempts_made: int, error: DeliveryError | None = None) -> float:
        """Seconds to wait after `attempts_made` attempts (>= 1), the last failing with `error`."""
        index = min(max(attempts_made, 1), len(self.schedule)) - 1
        spread = random.uniform(1 - self.jitter, 1 + self.jitter)  # noqa: S311 - jitter only
        wait = self.schedule[index] * spread
        if error is not None:
            throttled = error.status_code == 429 or error.status_code is None
            if throttled:
                wait = max(wait, self.min_throttle_wait)
            if error.retry_after is not None:
                wait = max(wait, min(error.retry_after, self.max_retry_after))
        return wait

    def decide(
        self, error: DeliveryError, *, attempts_made: int, now: float, deadline: float
    ) -> RetryDecision:
        """What to do after a failed attempt: retry later, or fail for good."""
        if not isinstance(error, RetryableDeliveryError):
            return RetryDecision(retry=False, reason=str(error))
        delay = self.wait_before_next(attempts_made, error)
        if now + delay > deadline:
            return RetryDecision(
                retry=False,
                reason=f"gave up after {attempts_made} attempts: the retry window "
                f"({self.window:.0f} s) ended; last error: {error}",
            )
        return RetryDecision(retry=True, delay=delay)
