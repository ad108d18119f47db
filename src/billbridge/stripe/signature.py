"""`Stripe-Signature` verification (official SDK, every configured secret) and signing.

    verify_signature(body, request.headers.get("Stripe-Signature"), settings.webhook_secrets)
    header = sign_payload(body, "whsec_...")  # for `billbridge trigger`, tests, benchmarks

Each rejection is a `WebhookRejected(400, reason)` whose reason is safe to return: it
never contains the header, a signature, a secret or the body.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from stripe import SignatureVerificationError, WebhookSignature

from billbridge.errors import WebhookRejected

DEFAULT_TOLERANCE = 300  # seconds, the SDK default; 0 would disable the recency check
EXPECTED_SCHEME = "v1"
MAX_TIMESTAMP_DIGITS = 12

NO_SECRET = "no webhook secret is configured on this server"  # noqa: S105 - a message
MISSING_HEADER = "missing Stripe-Signature header"
MALFORMED_HEADER = "malformed Stripe-Signature header"
NO_V1 = "no v1 signature in the Stripe-Signature header"
NO_MATCH = "signature does not match any configured secret"


def _stale(tolerance: int) -> str:
    return f"timestamp outside the {tolerance} s tolerance"


def _future(tolerance: int) -> str:
    return f"timestamp more than {tolerance} s in the future"


def _parse_header(header: str) -> tuple[int, list[str]]:
    """(t, [v1 signatures]) from the header, parsed like the SDK does (no trimming)."""
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            continue
        if key == "t":
            # 12 digits reach the year 33658; more would only make `int` slow or refuse
            if timestamp is not None or not (value.isascii() and value.isdigit()):
                raise WebhookRejected(400, MALFORMED_HEADER)
            if len(value) > MAX_TIMESTAMP_DIGITS:
                raise WebhookRejected(400, MALFORMED_HEADER)
            timestamp = int(value)
        elif key == EXPECTED_SCHEME:
            signatures.append(value)
    if timestamp is None:
        raise WebhookRejected(400, MALFORMED_HEADER)
    return timestamp, signatures


def verify_signature(
    payload: bytes,
    header: str | None,
    secrets: Sequence[str],
    tolerance: int = DEFAULT_TOLERANCE,
) -> None:
    """Accept the body when a `v1` signature matches any secret and `t` is recent.

    Recent means within `tolerance` seconds of now in both directions: the SDK only
    rejects old timestamps; rejecting ones far in the future too is our stricter
    choice (a signed request dated ahead could otherwise be replayed for longer).
    Raises `WebhookRejected(400, reason)`; returns None when the request is genuine.
    """
    if tolerance <= 0:
        raise ValueError("tolerance must be positive: 0 disables the recency check")
    usable = [secret for secret in secrets if secret and secret.strip()]
    if not usable:
        raise WebhookRejected(400, NO_SECRET)
    if not header or not header.strip():
        raise WebhookRejected(400, MISSING_HEADER)
    timestamp, signatures = _parse_header(header)
    if not signatures:
        raise WebhookRejected(400, NO_V1)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        # The SDK signs the text form; a body that is not UTF-8 cannot be a Stripe event.
        raise WebhookRejected(400, NO_MATCH) from None

    stale = False
    for secret in usable:
        try:
            WebhookSignature.verify_header(text, header, secret, tolerance=tolerance)
        except SignatureVerificationError as exc:
            # The SDK checks the signature before the age, so a "tolerance" error means
            # this secret matched and only the timestamp is wrong.
            if "tolerance" in str(exc):
                stale = True
            continue
        if timestamp > time.time() + tolerance:
            raise WebhookRejected(400, _future(tolerance))
        return
    if stale:
        raise WebhookRejected(400, _stale(tolerance))
    raise WebhookRejected(400, NO_MATCH)


def sign_payload(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` value Stripe would send for `payload`: `t=...,v1=...`."""
    if not secret:
        raise ValueError("a webhook secret is needed to sign a payload")
    header: str = WebhookSignature.generate_signature_header(
        payload.decode("utf-8"), secret, timestamp=timestamp
    )
    return header
