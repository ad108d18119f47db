"""Stripe API reads (official SDK, `STRIPE_API_BASE`) with an in-process TTL cache.

    api = StripeAPI(settings)
    customer = api.get_customer("cus_...")   # a plain dict, or None when deleted/missing

Methods are synchronous (the worker runs them in a thread) and thread-safe. Results are
plain dicts (`to_dict()`), never SDK objects. Failures become `StripeAPIError` with
`retryable` set for 429, 409, 5xx and connection errors; messages never contain the key.
"""

from __future__ import annotations

import copy
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import stripe

from billbridge.config import Settings
from billbridge.errors import ConfigurationError, StripeAPIError

DEFAULT_TIMEOUT = 20.0  # seconds per HTTP request
DEFAULT_CACHE_SIZE = 10_000  # entries (customers and charges together)
DEFAULT_NETWORK_RETRIES = 2  # SDK retries of 409/5xx/connection errors (429 is never retried)

_KEY_PATTERN = re.compile(r"\b(?:sk|rk|pk)_(?:test|live)_[A-Za-z0-9*_]+")

_Missing = object()


class _TTLCache:
    """A bounded, thread-safe LRU map whose entries expire `ttl` seconds after insertion."""

    def __init__(self, ttl: float, max_size: int, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._max_size = max_size
        self._clock = clock
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[str, ...], tuple[float, Any]] = OrderedDict()

    def get(self, key: tuple[str, ...]) -> Any:
        """The cached value, or `_Missing`."""
        if self._ttl <= 0:
            return _Missing
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                return _Missing
            expires_at, value = entry
            if expires_at <= self._clock():
                del self._items[key]
                return _Missing
            self._items.move_to_end(key)
            return value

    def put(self, key: tuple[str, ...], value: Any) -> None:
        if self._ttl <= 0:
            return
        with self._lock:
            self._items[key] = (self._clock() + self._ttl, value)
            self._items.move_to_end(key)
            while len(self._items) > self._max_size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def _scrub(text: str) -> str:
    """Remove anything shaped like a Stripe key (Stripe echoes a masked key on 401)."""
    return _KEY_PATTERN.sub("[key]", text)


def _translate(exc: stripe.StripeError, what: str) -> StripeAPIError:
    """A `StripeAPIError` for an SDK error: what happened, whether to retry, no secrets."""
    status: int | None = exc.http_status
    code = exc.code or ""
    detail = _scrub(str(getattr(exc, "user_message", None) or exc._message or ""))[:200]
    suffix = f" ({code})" if code else ""
    if isinstance(exc, stripe.APIConnectionError):
        return StripeAPIError(
            f"could not reach the Stripe API to {what}: connection failed or timed out; "
            "check STRIPE_API_BASE and the network",
            retryable=True,
            status_code=None,
        )
    if isinstance(exc, stripe.AuthenticationError) or status == 401:
        return StripeAPIError(
            f"Stripe refused STRIPE_API_KEY (401) when trying to {what}; "
            "set a valid secret (sk_) or restricted (rk_) key",
            retryable=False,
            status_code=status,
        )
    if isinstance(exc, stripe.PermissionError) or status == 403:
        return StripeAPIError(
            f"STRIPE_API_KEY may not {what} (403){suffix}; "
            "give the restricted key read access to customers, charges and events",
            retryable=False,
            status_code=status,
        )
    if isinstance(exc, stripe.RateLimitError) or status == 429:
        return StripeAPIError(
            f"Stripe rate limit reached (429) when trying to {what}; will retry later",
            retryable=True,
            status_code=status,
        )
    if status is not None and (status >= 500 or status == 409):
        return StripeAPIError(
            f"Stripe answered {status}{suffix} when trying to {what}; will retry later",
            retryable=True,
            status_code=status,
        )
    message = f"Stripe answered {status or 'an error'}{suffix} when trying to {what}"
    if detail:
        message += f": {detail}"
    return StripeAPIError(message, retryable=False, status_code=status)


def _is_missing(exc: stripe.StripeError) -> bool:
    return bool(exc.http_status == 404 or exc.code == "resource_missing")


def key_mode(api_key: str) -> str:
    """'test', 'live' or 'unknown' from a key's prefix (never returns the key)."""
    if api_key.startswith(("sk_test_", "rk_test_")):
        return "test"
    if api_key.startswith(("sk_live_", "rk_live_")):
        return "live"
    return "unknown"


class StripeAPI:
    """Cached reads of customers and charges, the webhook endpoints (for alerts), and a
    cheap credential check for `doctor`."""

    def __init__(
        self,
        settings: Settings,
        *,
        max_network_retries: int = DEFAULT_NETWORK_RETRIES,
        timeout: float = DEFAULT_TIMEOUT,
        cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if settings.stripe_api_key is None:
            raise ConfigurationError("STRIPE_API_KEY is not set; the Stripe API cannot be used")
        api_key = settings.stripe_api_key.get_secret_value()
        self.base_url = settings.stripe_api_base.rstrip("/")
        self.mode = key_mode(api_key)
        self._http = stripe.HTTPXClient(timeout=timeout, allow_sync_methods=True)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": self.base_url},
            max_network_retries=max_network_retries,
            http_client=self._http,
        )
        self._cache = _TTLCache(settings.stripe_cache_seconds, cache_size, clock)

    def __repr__(self) -> str:
        return f"StripeAPI(base_url={self.base_url!r}, mode={self.mode!r})"

    # Reads --------------------------------------------------------------------------------

    def get_customer(
        self, customer_id: str, *, account: str | None = None
    ) -> dict[str, Any] | None:
        """The customer as a dict; None when Stripe answers a deleted stub or 404."""

        def fetch(options: dict[str, Any]) -> Any:
            return self._client.v1.customers.retrieve(customer_id, options=options)

        found = self._cached_read(
            ("customer", account or "", customer_id), fetch, account, "read a customer"
        )
        if found is not None and found.get("deleted") is True:
            return None
        return found

    def get_charge(self, charge_id: str, *, account: str | None = None) -> dict[str, Any] | None:
        """The charge as a dict; None on 404."""

        def fetch(options: dict[str, Any]) -> Any:
            return self._client.v1.charges.retrieve(charge_id, options=options)

        return self._cached_read(
            ("charge", account or "", charge_id), fetch, account, "read a charge"
        )

    def read_expanded(
        self, kind: str, object_id: str, expand: Sequence[str], *, account: str | None = None
    ) -> dict[str, Any] | None:
        """A fresh (never cached) read of a `subscription` or `customer` with the `expand`
        paths expanded; None on 404 or a deleted customer."""
        services = {
            "subscription": self._client.v1.subscriptions,
            "customer": self._client.v1.customers,
        }
        options: dict[str, Any] = {"stripe_account": account} if account else {}
        try:
            obj = services[kind].retrieve(object_id, {"expand": list(expand)}, options)
        except stripe.StripeError as exc:
            if isinstance(exc, stripe.InvalidRequestError) and _is_missing(exc):
                return None
            raise _translate(exc, f"read a {kind}") from None
        value: dict[str, Any] = obj.to_dict()
        return None if value.get("deleted") is True else value

    def check(self) -> str:
        """One cheap authenticated read (GET /v1/balance); a description when it works."""
        try:
            balance = self._client.v1.balance.retrieve()
        except stripe.StripeError as exc:
            raise _translate(exc, "read the balance") from None
        livemode = bool(balance.to_dict().get("livemode"))
        return (
            f"Stripe API reachable at {self.base_url} with a "
            f"{'live' if livemode else 'test'} mode key"
        )

    def close(self) -> None:
        """Close the HTTP connections (the object must not be used afterwards)."""
        self._http.close()

    # Internals ----------------------------------------------------------------------------

    def _cached_read(
        self,
        key: tuple[str, ...],
        fetch: Callable[[dict[str, Any]], Any],
        account: str | None,
        what: str,
    ) -> dict[str, Any] | None:
        cached = self._cache.get(key)
        if cached is not _Missing:
            return None if cached is None else copy.deepcopy(cached)
        options: dict[str, Any] = {"stripe_account": account} if account else {}
        try:
            obj = fetch(options)
        except stripe.StripeError as exc:
            if isinstance(exc, stripe.InvalidRequestError) and _is_missing(exc):
                self._cache.put(key, None)
                return None
            raise _translate(exc, what) from None
        value: dict[str, Any] = obj.to_dict()
        self._cache.put(key, value)
        return copy.deepcopy(value)
