"""Log lines: tracebacks as bounded text without local variables, secrets redacted, for
Billbridge's loggers and foreign ones (uvicorn, SQLAlchemy) alike."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from billbridge.observability import (
    MAX_TRACEBACK_CHARS,
    configure_logging,
    format_exception_text,
    redact_text,
)

SECRET = "pw-unit-Log-Secret-991"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Each test configures logging; the next test module gets the defaults back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    # As `serve` runs uvicorn (log_config=None): its loggers hand records to the root's
    # handler. Another test's uvicorn may have configured them otherwise.
    foreign = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error")]
    saved = [(lg.handlers[:], lg.propagate, lg.level, lg.disabled) for lg in foreign]
    for logger in foreign:
        logger.handlers[:] = []
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
        logger.disabled = False
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)
    for logger, (own, propagate, own_level, disabled) in zip(foreign, saved, strict=True):
        logger.handlers[:] = own
        logger.propagate = propagate
        logger.setLevel(own_level)
        logger.disabled = disabled


def _fail_with_secret_local() -> None:
    password = SECRET  # a local variable a rich traceback would print
    raise RuntimeError("the database is unavailable: " + type(password).__name__)


@pytest.mark.parametrize("log_format", ["console", "json"])
def test_a_foreign_loggers_exception_has_its_traceback_but_no_locals(
    capsys: pytest.CaptureFixture[str], log_format: str
) -> None:
    """uvicorn's "Exception in ASGI application" keeps the traceback (text in JSON too)
    and never prints a frame's local variables."""
    configure_logging(log_format=log_format, secrets=())
    try:
        _fail_with_secret_local()
    except RuntimeError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
        structlog.get_logger("billbridge.test").exception("ours failed too")
    err = capsys.readouterr().err
    assert SECRET not in err
    assert err.count("_fail_with_secret_local") >= 2  # both tracebacks, frame by frame
    if log_format == "json":
        lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        assert [line["event"] for line in lines] == [
            "Exception in ASGI application",
            "ours failed too",
        ]
        assert all(line["exception"].startswith("Traceback") for line in lines)


def test_secrets_are_redacted_in_messages_of_any_logger(capsys: pytest.CaptureFixture[str]) -> None:
    """Known secrets and secret-shaped text (bearer tokens, Stripe keys, cookies,
    `password=`) are replaced in every line, whoever logged it."""
    configure_logging(log_format="json", secrets=("cio-known-secret-123",))
    logging.getLogger("sqlalchemy.engine").warning(
        "params key=%s auth=%s", "cio-known-secret-123", "Bearer bb_tok_abcdef"
    )
    logging.getLogger("httpx").warning("GET /x?password=hunter2&ok=1 sk_live_abc123")
    structlog.get_logger("t").info("saved", detail={"cookie": "billbridge_session=zzz999"})
    err = capsys.readouterr().err
    for secret in ("cio-known-secret-123", "bb_tok_abcdef", "hunter2", "sk_live_abc123", "zzz999"):
        assert secret not in err
    assert err.count("[redacted]") >= 5


def test_a_recursion_error_renders_fast_and_bounded() -> None:
    """A RecursionError's thousand frames render in milliseconds, innermost frames kept."""

    def recurse(depth: int) -> int:
        return recurse(depth + 1)

    try:
        recurse(0)
    except RecursionError:
        info: Any = sys.exc_info()
    started = time.perf_counter()
    text = format_exception_text(info)
    assert time.perf_counter() - started < 0.2
    assert len(text) < 10_000
    assert text.endswith("RecursionError: maximum recursion depth exceeded")


def test_a_huge_traceback_keeps_its_head_and_tail() -> None:
    """An exception whose message is megabytes long is cut to MAX_TRACEBACK_CHARS."""
    error = ValueError("x" * 5_000_000 + "END")
    text = format_exception_text((ValueError, error, None))
    assert len(text) < MAX_TRACEBACK_CHARS + 100
    assert text.startswith("ValueError: xxx")
    assert text.endswith("END")
    assert "characters cut" in text


def test_redact_text_keeps_ordinary_text() -> None:
    """Text without secrets is unchanged."""
    line = "stored event evt_123 for cus_456 in 3.2 ms"
    assert redact_text(line) == line
