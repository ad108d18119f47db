"""The error hierarchy: one base, a retryable and a terminal branch for delivery.

    BillbridgeError
    ├── ConfigurationError        a setting is missing or malformed; fix the environment
    ├── StoreUnavailableError     the database cannot be reached (ingest answers 503)
    ├── WebhookRejected           a webhook request refused with a 4xx (status + reason)
    ├── WorkflowValidationError   a workflow definition is invalid (carries field paths)
    ├── StripeAPIError            a call to the Stripe API failed (enrichment, reconcile)
    ├── EventPrunedError          no replay: the payload was removed (retention, erasure)
    ├── ErasureRequestError       an erasure request that names nobody
    └── DeliveryError             a Customer.io call did not succeed
        ├── RetryableDeliveryError    408, 429, 5xx, timeouts, connection errors
        │   └── AmbiguousSendError    a non-idempotent send timed out: it may have happened
        └── TerminalDeliveryError     other 4xx: retrying cannot help

Messages say what happened and what to do. They never contain a secret, an API key,
a signature or a request payload (which holds personal data).
"""

from __future__ import annotations


class BillbridgeError(Exception):
    """Something went wrong inside Billbridge."""


class ConfigurationError(BillbridgeError):
    """A setting is missing or malformed; the message names it and says how to fix it."""


class StoreUnavailableError(BillbridgeError):
    """The database cannot be reached or refused the write; nothing was stored."""


class WebhookRejected(BillbridgeError):
    """A webhook request refused with a 4xx status; `reason` is safe to return to the caller."""

    def __init__(self, status_code: int, reason: str) -> None:
        super().__init__(reason)
        self.status_code = status_code
        self.reason = reason


class WorkflowValidationError(BillbridgeError):
    """A workflow definition is invalid. `problems` maps a field path to what is wrong."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = dict(problems)
        details = "; ".join(f"{path}: {message}" for path, message in self.problems.items())
        super().__init__(f"invalid workflow: {details}")


class StripeAPIError(BillbridgeError):
    """A Stripe API call failed. `retryable` tells whether trying again later may help."""

    def __init__(self, message: str, *, retryable: bool, status_code: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status_code = status_code


class EventPrunedError(BillbridgeError):
    """The event's payload was removed (retention or erasure): it cannot be replayed."""

    def __init__(self, stripe_event_id: str, reason: str) -> None:
        why = (
            "its payload was removed (the person's data was erased)"
            if reason == "erasure"
            else "its payload was removed after BILLBRIDGE_RETENTION_DAYS (retention)"
        )
        super().__init__(f"{stripe_event_id} cannot be replayed: {why}")
        self.stripe_event_id = stripe_event_id
        self.reason = reason


class ErasureRequestError(BillbridgeError):
    """An erasure request that names nobody: give a customer id (cus_...) or an email."""


class DeliveryError(BillbridgeError):
    """A Customer.io call did not succeed.

    `status_code` is the HTTP status (None for transport errors), `response_body` a
    truncated copy of what Customer.io answered (it never echoes our credentials).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        response_body: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.response_body = response_body
        self.retry_after = retry_after  # seconds, from a Retry-After header


class RetryableDeliveryError(DeliveryError):
    """408, 429, 5xx, timeout or connection error: the same call may succeed later."""


class AmbiguousSendError(RetryableDeliveryError):
    """A non-idempotent call (transactional send, broadcast) timed out after it was sent.

    Customer.io may or may not have acted on it. The delivery policy decides whether to
    retry (risking a second message) or stop and let a person decide.
    """


class TerminalDeliveryError(DeliveryError):
    """A 4xx other than 408/429: the request itself is wrong, retrying cannot help."""
