"""Rate-limited, paginated Stripe list calls for reconcile, backfill and webhook set-up.

    lister = StripeLister.from_settings(settings)
    for event in lister.iterate("events", {"types": [...], "created": {"gt": 1700000000}}):
        ...
    lister.requests      # HTTP requests made, retries included

Every request first takes a token from a `TokenBucket` (Stripe allows 25 requests per
second in test mode and 100 in live mode, per account). A 429 is not retried by the SDK,
so it is retried here: wait `Retry-After` when Stripe sends one, else an exponential
backoff with jitter, `min(0.5 * 2**n, 8)` seconds times a random 0.5..1.0 (worked
numbers: 0.25-0.5 s, 0.5-1 s, 1-2 s, 2-4 s, 4-8 s, 4-8 s, ...), at most `max_429_retries`
times per request. Other errors become `StripeAPIError` (no key in the message).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import stripe

from billbridge.config import Settings
from billbridge.errors import ConfigurationError
from billbridge.stripe.api import DEFAULT_TIMEOUT, _translate, key_mode

LIVE_RATE = 100.0  # requests per second Stripe allows a live-mode key
TEST_RATE = 25.0  # requests per second in test mode (sandboxes)
PAGE_SIZE = 100  # Stripe's maximum `limit`
MAX_429_RETRIES = 8
BACKOFF_CAP = 8.0  # seconds
NETWORK_RETRIES = 2  # SDK retries of 409/5xx/connection errors (never 429)

Sleep = Callable[[float], None]


def default_rate(api_key: str) -> float:
    """Stripe's documented limit for this key: 25/s in test mode, 100/s in live mode."""
    return LIVE_RATE if key_mode(api_key) == "live" else TEST_RATE


class TokenBucket:
    """At most `rate` acquisitions per second on average, bursts up to `burst`. Thread-safe.

    Tokens refill continuously; `acquire()` sleeps until one is available.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        # A burst of a whole second's worth could exceed a strict per-second window;
        # a fifth of it keeps any one-second window at or under `rate`.
        self.burst = burst if burst is not None else max(1.0, rate / 5)
        self._tokens = self.burst
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping as long as needed; returns the seconds slept."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                if self._tokens >= 1 - 1e-9:  # float rounding must not spin forever
                    self._tokens -= 1
                    return waited
                delay = (1 - self._tokens) / self.rate
            self._sleep(delay)
            waited += delay

    def pause(self, seconds: float) -> None:
        """Empty the bucket so that nobody sends for `seconds` (after a 429)."""
        with self._lock:
            self._tokens = min(self._tokens, 0.0) - seconds * self.rate
            self._updated = self._clock()


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number `attempt` (1-based) after a 429."""
    base: float = min(0.5 * 2.0 ** (attempt - 1), BACKOFF_CAP)
    jitter: float = (rng or random).uniform(0.5, 1.0)
    return base * jitter


def _retry_after(exc: stripe.StripeError) -> float | None:
    headers = exc.headers or {}
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                return min(max(float(value), 0.0), 60.0)
            except (TypeError, ValueError):
                return None
    return None


def _plain(result: Any) -> dict[str, Any]:
    """The answer as Stripe sent it (plain JSON types): `to_dict()` would turn decimals
    into `Decimal`, which the event store's JSON cannot hold."""
    response = getattr(result, "last_response", None)
    body = getattr(response, "body", None)
    if isinstance(body, str | bytes):
        parsed = json.loads(body)
        if isinstance(parsed, dict):
            return parsed
    value: dict[str, Any] = result.to_dict()
    return value


class StripeLister:
    """Stripe v1 calls through the official SDK with a token bucket and 429 retries."""

    def __init__(
        self,
        client: stripe.StripeClient,
        *,
        rate: float,
        http_client: Any = None,
        sleep: Sleep = time.sleep,
        max_429_retries: int = MAX_429_RETRIES,
    ) -> None:
        self.client = client  # the SDK client, for calls other than lists
        self._http = http_client
        self._sleep = sleep
        self._max_429_retries = max_429_retries
        self.bucket = TokenBucket(rate, sleep=sleep)
        self._count_lock = threading.Lock()
        self.requests = 0  # HTTP requests sent (429 retries included)
        self.rate_limited = 0  # 429 answers received

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        rate: float | None = None,
        sleep: Sleep = time.sleep,
        timeout: float = DEFAULT_TIMEOUT,
        network_retries: int = NETWORK_RETRIES,
    ) -> StripeLister:
        """A lister for STRIPE_API_KEY at STRIPE_API_BASE; `rate` defaults to Stripe's limit.
        `timeout` (seconds per request) and `network_retries` are shorter for calls a page
        waits for."""
        if settings.stripe_api_key is None:
            raise ConfigurationError(
                "STRIPE_API_KEY is not set: reconcile, backfill and setup-webhook need a "
                "secret (sk_) or restricted (rk_) key"
            )
        api_key = settings.stripe_api_key.get_secret_value()
        http = stripe.HTTPXClient(timeout=timeout, allow_sync_methods=True)
        client = stripe.StripeClient(
            api_key,
            base_addresses={"api": settings.stripe_api_base.rstrip("/")},
            max_network_retries=network_retries,
            http_client=http,
        )
        return cls(client, rate=rate or default_rate(api_key), http_client=http, sleep=sleep)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    # Calls --------------------------------------------------------------------------------

    def call(self, what: str, request: Callable[[], Any]) -> dict[str, Any]:
        """Run one SDK call under the rate limit, retrying 429s; the result as a dict."""
        attempt = 0
        while True:
            self.bucket.acquire()
            with self._count_lock:
                self.requests += 1
            try:
                result = request()
            except stripe.StripeError as exc:
                if exc.http_status != 429 or attempt >= self._max_429_retries:
                    raise _translate(exc, what) from None
                attempt += 1
                with self._count_lock:
                    self.rate_limited += 1
                delay = _retry_after(exc) or backoff_delay(attempt)
                self.bucket.pause(delay)
                continue
            return _plain(result)

    def list_page(self, resource: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """One page of `GET /v1/<resource>` (e.g. "events", "customers")."""
        service = getattr(self.client.v1, resource)
        return self.call(f"list {resource}", lambda: service.list(dict(params)))

    def iterate(
        self,
        resource: str,
        params: Mapping[str, Any] | None = None,
        *,
        starting_after: str | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every object of a list, newest first, page by page (`limit=100`, `starting_after`).

        Stops early when `should_stop()` turns true between pages.
        """
        query: dict[str, Any] = {"limit": PAGE_SIZE, **(params or {})}
        cursor = starting_after
        while True:
            if cursor is not None:
                query["starting_after"] = cursor
            page = self.list_page(resource, query)
            data = page.get("data") or []
            yield from data
            if not page.get("has_more") or not data:
                return
            cursor = str(data[-1]["id"])
            if should_stop is not None and should_stop():
                return
