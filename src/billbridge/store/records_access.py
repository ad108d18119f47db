"""Plain records for access control, stored credentials and alert state."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UserRecord:
    """A dashboard account; `password_hash` is an argon2 (PHC string) hash."""

    user_id: int
    username: str
    password_hash: str
    created_at: float


@dataclass(frozen=True)
class SessionRecord:
    """A live browser session with its user and its CSRF token."""

    user_id: int
    username: str
    csrf_token: str
    created_at: float
    expires_at: float


@dataclass(frozen=True)
class ApiTokenRecord:
    """An API token: only its SHA-256 is stored; `prefix` identifies it in lists."""

    token_id: int
    name: str
    prefix: str
    created_at: float
    revoked_at: float | None
    last_used_at: float | None


@dataclass(frozen=True)
class FailedDeliveries:
    """Deliveries that failed permanently after a watermark (for alerts)."""

    count: int
    by_workflow: dict[str, int]
    newest_at: float | None  # updated_at of the newest one: the next watermark
    last_error: str | None


@dataclass(frozen=True)
class AlertStateRecord:
    """Where alerting stands: when the last message went out and what it covered."""

    name: str
    last_sent_at: float | None
    watermark: float  # failures updated after this are not reported yet


@dataclass(frozen=True)
class ThrottleLimit:
    """Growing delays for one kind of throttle key (an account, or a client address).

    The first `free` failures cost nothing; with `n >= free` failures on record the next
    attempt must wait `min(base * 2 ** (n - free), cap)` seconds after the latest one
    (1, 2, 4, ... 60 s with the defaults: never a lock-out longer than `cap`). The count
    starts again `reset_after` seconds after the latest failure.
    """

    free: int = 5
    base: float = 1.0  # seconds
    cap: float = 60.0  # seconds
    reset_after: float = 900.0  # seconds

    def wait(self, failures: int, last_failure_at: float, now: float) -> float:
        """Seconds until the next attempt is allowed (0 when it is allowed now)."""
        if failures < self.free or now - last_failure_at > self.reset_after:
            return 0.0
        delay = min(self.base * 2.0 ** min(failures - self.free, 64), self.cap)
        return max(0.0, last_failure_at + delay - now)
