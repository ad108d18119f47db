"""Which Customer.io trouble the latest failed calls point to, for the alert's words."""

from __future__ import annotations

from billbridge.alerts.conditions import diagnose
from billbridge.store.records_ops import RecentAttempt

NOW = 1_800_000_000.0


def _attempt(
    status: int | None, outcome: str = "retryable_error", age: float = 10
) -> RecentAttempt:
    return RecentAttempt(outcome=outcome, response_status=status, error="e", started_at=NOW - age)


def test_the_most_common_status_names_the_cause() -> None:
    """401/403 -> a revoked key, 429 -> a rate-limit storm, 5xx/no answer -> down."""
    auth = diagnose([_attempt(401, "terminal_error"), _attempt(403, "terminal_error")], NOW)
    assert auth is not None
    assert auth.cause == "auth"
    assert "2 of the last 2" in auth.line
    storm = diagnose([_attempt(429), _attempt(429), _attempt(503)], NOW)
    assert storm is not None
    assert storm.cause == "rate_limit"
    down = diagnose([_attempt(None), _attempt(502), _attempt(None, "unknown")], NOW)
    assert down is not None
    assert down.cause == "down"
    refused = diagnose([_attempt(400, "terminal_error")], NOW)
    assert refused is not None
    assert refused.cause == "refused"


def test_old_attempts_and_template_errors_do_not_count() -> None:
    """Attempts older than an hour, and terminal errors that never reached Customer.io
    (no answer: a template error), give no diagnosis."""
    assert diagnose([_attempt(401, "terminal_error", age=7200)], NOW) is None
    assert diagnose([_attempt(None, "terminal_error")], NOW) is None
    assert diagnose([], NOW) is None
