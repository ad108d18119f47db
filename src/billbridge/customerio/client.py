"""CustomerIOClient: sends CioRequests over pooled httpx connections and classifies every failure.

    async with CustomerIOClient(settings) as cio:
        await cio.send(CioRequest("track", "PUT", "/api/v1/customers/cus_1", {"plan": "pro"}))

With a `Pacer`, each call first waits for its slot in the rates every process shares
(customerio/pacing.py); a 429 stays the last resort. Outcomes (SPEC §5): 2xx ->
`CioResponse`; 408, 429, 5xx and connection failures -> `RetryableDeliveryError` (with
`retry_after` from `Retry-After`); a timeout or a broken connection after the request went
out -> `RetryableDeliveryError` when the request is idempotent, `AmbiguousSendError` when
it is not (it may have been acted on); 3xx and other 4xx -> `TerminalDeliveryError`. Error
messages name the method and the path with the person identifier replaced by
`{identifier}`; they never hold a key, a header or the request body.

Two workspaces: `mode="live"` (CUSTOMERIO_*) and `mode="test"` (CUSTOMERIO_TEST_*, for
Stripe test-mode events). Every call names its mode, so one call (or one v2 batch) never
reaches both.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from pydantic import SecretStr

from billbridge import __version__
from billbridge.config import CioMode, Settings
from billbridge.customerio.batch import (
    BatchItemError,
    BatchResult,
    encode_json,
    parse_partial_errors,
    plan_batches,
)
from billbridge.customerio.pacing import Pacer
from billbridge.customerio.requests import CioApi, CioRequest, CioResponse
from billbridge.errors import (
    AmbiguousSendError,
    DeliveryError,
    RetryableDeliveryError,
    TerminalDeliveryError,
)

MAX_CONNECTIONS = 64  # the worker runs at most this many calls at once
POOL_SHARDS = 32  # small httpx pools the connections are spread over (see `_Pools`)
CONNECT_TIMEOUT = 3.0  # seconds; an unreachable host should fail fast and be retried
MAX_RETRY_AFTER = 21_600.0  # seconds (6 h), the cap urllib3 applies too
ERROR_BODY_LIMIT = 2048  # bytes of an error answer kept on the exception
RESPONSE_BODY_LIMIT = 4096  # bytes of a 2xx answer kept on the CioResponse
DETAIL_LIMIT = 300  # characters of Customer.io's error detail put in a message

_TRACK_ENV = {
    "live": "CUSTOMERIO_SITE_ID and CUSTOMERIO_TRACK_API_KEY",
    "test": "CUSTOMERIO_TEST_SITE_ID and CUSTOMERIO_TEST_TRACK_API_KEY",
}
_APP_ENV = {"live": "CUSTOMERIO_APP_API_KEY", "test": "CUSTOMERIO_TEST_APP_API_KEY"}
# Path segments that follow these names hold personal data or device tokens.
_SCRUBBED_SEGMENTS = {"customers": "{identifier}", "devices": "{device_id}"}
# Body keys whose string values identify a person; they are scrubbed from error details.
_PII_KEYS = ("id", "email", "cio_id", "phone", "to", "cc", "bcc", "anonymous_id")


def safe_path(path: str) -> str:
    """The path with person identifiers and device tokens replaced by placeholders."""
    segments = path.split("?", 1)[0].split("/")
    for position in range(len(segments) - 1):
        placeholder = _SCRUBBED_SEGMENTS.get(segments[position])
        if placeholder and segments[position + 1]:
            segments[position + 1] = placeholder
    return "/".join(segments)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP date), clamped to
    [0, 21600]; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def error_detail(text: str) -> str | None:
    """Customer.io's own explanation from an error body, in any of its three envelopes:
    `{"meta":{"errors":[..]}}`, `{"meta":{"error":..}}`, `{"errors":[{"detail"|"message"}]}`."""
    stripped = text.strip()
    if not stripped:
        return None
    try:
        data = json.loads(stripped)
    except ValueError:
        if stripped.startswith("<"):  # an HTML error page from a proxy says nothing useful
            return None
        return " ".join(stripped.split())[:DETAIL_LIMIT]
    parts: list[str] = []
    if isinstance(data, dict):
        meta = data.get("meta")
        if isinstance(meta, dict):
            errors = meta.get("errors")
            if isinstance(errors, list):
                parts.extend(str(item) for item in errors if item not in (None, ""))
            elif isinstance(errors, str) and errors:
                parts.append(errors)
            if meta.get("error"):
                parts.append(str(meta["error"]))
        errors = data.get("errors")
        if isinstance(errors, list):
            for item in errors:
                if isinstance(item, dict):
                    message = item.get("detail") or item.get("message") or item.get("reason")
                    if message:
                        field = item.get("field")
                        parts.append(f"{field}: {message}" if field else str(message))
                elif isinstance(item, str) and item:
                    parts.append(item)
    if not parts:
        return None
    return " ".join("; ".join(parts).split())[:DETAIL_LIMIT]


def _sensitive_values(request: CioRequest) -> list[str]:
    """Strings of the request that identify a person, longest first, for scrubbing."""
    values: set[str] = set()
    segments = request.path.split("/")
    for position in range(len(segments) - 1):
        if segments[position] in _SCRUBBED_SEGMENTS and segments[position + 1]:
            values.update({segments[position + 1], unquote(segments[position + 1])})
    body = request.body or {}
    for source in (body, body.get("identifiers")):
        if isinstance(source, dict):
            for key in _PII_KEYS:
                value = source.get(key)
                if isinstance(value, str):
                    values.add(value)
    return sorted((value for value in values if len(value) >= 3), key=len, reverse=True)


def _scrub(text: str, values: list[str]) -> str:
    for value in values:
        text = text.replace(value, "[redacted]")
    return text


@dataclass(frozen=True)
class _Workspace:
    """One workspace's origins and ready-made Authorization headers (None: not configured)."""

    track_url: str
    app_url: str
    track_auth: str | None
    app_auth: str | None


def _basic(site_id: str | None, key: SecretStr | None) -> str | None:
    if not (site_id and key):
        return None
    pair = f"{site_id}:{key.get_secret_value()}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


def _bearer(key: SecretStr | None) -> str | None:
    return "Bearer " + key.get_secret_value() if key else None  # "" counts as not set


def workspaces_of(settings: Settings) -> dict[CioMode, _Workspace]:
    """The live and the test workspace as `settings` configures them."""
    return {
        "live": _Workspace(
            settings.track_base_url,
            settings.app_base_url,
            _basic(settings.customerio_site_id, settings.customerio_track_api_key),
            _bearer(settings.customerio_app_api_key),
        ),
        "test": _Workspace(
            settings.test_track_base_url,
            settings.test_app_base_url,
            _basic(settings.customerio_test_site_id, settings.customerio_test_track_api_key),
            _bearer(settings.customerio_test_app_api_key),
        ),
    }


class CustomerIOClient:
    """Track and App API calls with authentication, timeouts and error classification.

    One `httpx.AsyncClient` (HTTP/1.1 keep-alive, up to 64 connections) is shared by all
    calls; close it with `aclose()` or use the client as an async context manager.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        credentials: Callable[[], Settings] | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        # `credentials` gives the current effective settings (environment over what was
        # saved in the dashboard), so new credentials apply without a restart.
        self._credentials = credentials or (lambda: settings)
        # `pacer` (the services' one) makes each call wait for its slot in the rates the
        # whole fleet shares; without it calls go at once (tests, `doctor`).
        self._pacer = pacer
        self._settings = settings
        self._configure(settings)
        timeout = settings.customerio_timeout
        # One TLS context for every pool (each would load the CA bundle again: ~1 MB and
        # ~50 ms apiece); it honours SSL_CERT_FILE / SSL_CERT_DIR like httpx's own.
        tls = httpx.create_ssl_context(trust_env=True)

        def http_client(connections: int) -> httpx.AsyncClient:
            return httpx.AsyncClient(
                transport=transport,
                verify=tls,
                timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT)),
                limits=httpx.Limits(
                    max_connections=connections, max_keepalive_connections=connections
                ),
                http1=True,
                http2=False,
                follow_redirects=False,
                # trust_env stays on: operators set HTTPS_PROXY / NO_PROXY / SSL_CERT_FILE.
                headers={
                    "User-Agent": f"billbridge/{__version__}",
                    "Accept": "application/json",
                },
            )

        # A given transport (tests) is one object: it stays with one client.
        shards = 1 if transport is not None else POOL_SHARDS
        self._http = _Pools(http_client, MAX_CONNECTIONS, shards, pool_timeout=timeout)

    def _configure(self, settings: Settings) -> None:
        self._settings = settings
        self._workspaces = workspaces_of(settings)
        keys = (
            settings.customerio_track_api_key,
            settings.customerio_app_api_key,
            settings.customerio_test_track_api_key,
            settings.customerio_test_app_api_key,
        )
        self._secrets = [key.get_secret_value() for key in keys if key]  # "" scrubs nothing

    def _current(self) -> None:
        """Pick up credentials changed since the last call (cheap when unchanged)."""
        settings = self._credentials()
        if settings is not self._settings:
            self._configure(settings)

    @property
    def dry_run(self) -> bool:
        """No Track credentials right now: requests are computed and recorded, not sent."""
        self._current()
        return self._settings.dry_run

    @property
    def settings(self) -> Settings:
        """The effective settings now (environment over credentials saved in the dashboard):
        which workspaces are configured and where test-mode events go."""
        self._current()
        return self._settings

    async def __aenter__(self) -> CustomerIOClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pools. The client cannot send afterwards."""
        await self._http.aclose()

    # Public calls ---------------------------------------------------------------------

    async def send(self, request: CioRequest, *, mode: CioMode = "live") -> CioResponse:
        """Send one call to the `mode` workspace; return the 2xx answer or raise a
        classified `DeliveryError`."""
        response, duration_ms = await self._exchange(request, mode)
        return CioResponse(
            status_code=response.status_code,
            body=response.text[:RESPONSE_BODY_LIMIT],
            duration_ms=duration_ms,
        )

    async def check_region(self, *, mode: CioMode = "live") -> dict[str, Any]:
        """`GET /api/v1/accounts/region`: `{url, region, environment_id}` of the Track
        credentials of `mode`; a good probe of the credentials and of the region."""
        request = CioRequest(api="track", method="GET", path="/api/v1/accounts/region")
        response, _ = await self._exchange(request, mode)
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise TerminalDeliveryError(
                "Customer.io answered GET /api/v1/accounts/region with something other than "
                "a JSON object; check CUSTOMERIO_TRACK_URL",
                status_code=response.status_code,
                response_body=response.text[:ERROR_BODY_LIMIT],
            )
        return {
            "url": data.get("url"),
            "region": data.get("region"),
            "environment_id": data.get("environment_id"),
        }

    async def batch(
        self, operations: list[dict[str, Any]], *, mode: CioMode = "live"
    ) -> BatchResult:
        """Send Track v2 operations to the `mode` workspace through `POST /api/v2/batch`,
        split into requests under 500 KB; operations above 32 KB are not sent and come back
        in `errors`.

        A failed request raises its `DeliveryError`; the requests before it were accepted.
        Re-sending the whole list is safe: identify upserts and events carry dedupe ids.
        """
        chunks, errors = plan_batches(operations)
        sent = 0
        for chunk in chunks:
            request = CioRequest(
                api="track",
                method="POST",
                path="/api/v2/batch",
                body={"batch": [operations[index] for index in chunk]},
            )
            response, _ = await self._exchange(request, mode)
            sent += 1
            if response.status_code == 207:
                errors.extend(parse_partial_errors(response.text, chunk))
        ordered: list[BatchItemError] = sorted(errors, key=lambda error: error.index)
        return BatchResult(total=len(operations), requests=sent, errors=tuple(ordered))

    # Internals ------------------------------------------------------------------------

    def _target(self, api: CioApi, mode: CioMode) -> tuple[str, str]:
        self._current()
        workspace = self._workspaces[mode]
        which = "" if mode == "live" else "test workspace "
        if api == "track":
            if workspace.track_auth is None:
                raise TerminalDeliveryError(
                    f"Customer.io {which}Track API credentials are not configured: set "
                    f"{_TRACK_ENV[mode]}"
                )
            return workspace.track_url, workspace.track_auth
        if workspace.app_auth is None:
            raise TerminalDeliveryError(
                f"Customer.io {which}App API key is not configured (needed for transactional "
                f"mail and broadcasts): set {_APP_ENV[mode]}"
            )
        return workspace.app_url, workspace.app_auth

    async def _exchange(
        self, request: CioRequest, mode: CioMode = "live"
    ) -> tuple[httpx.Response, float]:
        """One HTTP exchange; returns a 2xx response or raises a classified error."""
        base_url, authorization = self._target(request.api, mode)
        where = f"{request.method} {safe_path(request.path)}"
        headers = {"Authorization": authorization}
        content: bytes | None = None
        if request.body is not None:
            try:
                content = encode_json(request.body)
            except (TypeError, ValueError):
                raise TerminalDeliveryError(
                    f"the body of {where} is not JSON-serialisable; nothing was sent"
                ) from None
            headers["Content-Type"] = "application/json"
        if self._pacer is not None:
            await self._pacer.wait(request)  # may raise RetryableDeliveryError: nothing sent
        started = time.perf_counter()
        try:
            response = await self._http.request(
                request.method,
                base_url + request.path,
                params=request.query or None,
                content=content,
                headers=headers,
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            # `from None`: httpx's own message may hold the URL with the identifier.
            raise self._transport_error(exc, request, where) from None
        duration_ms = (time.perf_counter() - started) * 1000
        if 200 <= response.status_code < 300:
            return response, duration_ms
        raise self._status_error(request, response, where, mode)

    def _status_error(
        self, request: CioRequest, response: httpx.Response, where: str, mode: CioMode
    ) -> DeliveryError:
        status = response.status_code
        text = response.text
        detail = error_detail(text)
        suffix = f": {_scrub(detail, _sensitive_values(request))}" if detail else ""
        body = text[:ERROR_BODY_LIMIT]
        region_env = "CUSTOMERIO_REGION" if mode == "live" else "CUSTOMERIO_TEST_REGION"
        if 300 <= status < 400:
            hint = "the workspace is probably in the other region"
            location = urlsplit(response.headers.get("location", "")).hostname or ""
            if location:
                region = "eu" if "-eu" in location else "us"
                hint = f"it points to {location}, so the workspace is probably in region {region}"
            return TerminalDeliveryError(
                f"Customer.io answered {status} (a redirect) to {where} and Billbridge does not "
                f"follow redirects; {hint}: set {region_env} (us or eu) to the "
                "workspace's region",
                status_code=status,
                response_body=body,
            )
        if status in (408, 429) or status >= 500:
            return RetryableDeliveryError(
                f"Customer.io answered {status} to {where}{suffix}; it will be retried",
                status_code=status,
                response_body=body,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        if status in (401, 403):
            env = (_TRACK_ENV if request.api == "track" else _APP_ENV)[mode]
            return TerminalDeliveryError(
                f"Customer.io answered {status} to {where}{suffix}: check {env} and {region_env}",
                status_code=status,
                response_body=body,
            )
        return TerminalDeliveryError(
            f"Customer.io answered {status} to {where}{suffix}",
            status_code=status,
            response_body=body,
        )

    def _transport_error(
        self, exc: httpx.HTTPError | httpx.InvalidURL, request: CioRequest, where: str
    ) -> DeliveryError:
        reason = _scrub(str(exc), [*self._secrets, request.path, *_sensitive_values(request)])
        reason = f"{type(exc).__name__}: {reason}"[:200] if reason else type(exc).__name__
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
            return RetryableDeliveryError(
                f"could not connect to Customer.io for {where} ({reason}); nothing was sent, "
                "it will be retried"
            )
        if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
            env = "CUSTOMERIO_TRACK_URL" if request.api == "track" else "CUSTOMERIO_APP_URL"
            return TerminalDeliveryError(
                f"cannot send {where}: the Customer.io base URL is invalid ({reason}); "
                f"check {env} or unset it to use CUSTOMERIO_REGION"
            )
        # Anything else happened after the request may have reached Customer.io.
        if isinstance(exc, httpx.TimeoutException):
            what = "timed out waiting for Customer.io's answer to"
        else:
            what = "lost the connection before Customer.io answered"
        if request.idempotent:
            return RetryableDeliveryError(
                f"{what} {where} ({reason}); the call is idempotent and will be retried"
            )
        return AmbiguousSendError(
            f"{what} {where} ({reason}) after the request was sent: Customer.io may or may "
            "not have acted on it, and this call is not idempotent"
        )


class _Pools:
    """`connections` HTTP connections as `shards` small httpx clients, one request per
    connection at a time.

    httpcore's pool re-examines every connection (for each idle one, every connection
    again), and every queued request against every connection, each time a request starts
    or ends. With one pool of 64 connections and the worker's hundreds of calls in flight
    that was nearly all of the worker's CPU (about 3-4 ms per call, 250-330 calls/s, with
    Track batching off). So calls wait here for a free connection (a semaphore; the wait
    is bounded by the pool timeout, as in httpx's own queue, and ends in the same
    `httpx.PoolTimeout`) and then go to the least busy of many tiny pools, which never
    queue: about 1 ms of CPU per call, httpx's own cost.
    """

    def __init__(
        self,
        make_client: Callable[[int], httpx.AsyncClient],
        connections: int,
        shards: int,
        *,
        pool_timeout: float,
    ) -> None:
        per_shard = max(1, connections // shards)
        self._clients = [make_client(per_shard) for _ in range(shards)]
        self._busy = [0] * shards
        self._capacity = per_shard * shards
        self._pool_timeout = pool_timeout
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        # An asyncio semaphore belongs to one event loop; a client used from a new loop
        # (a CLI command run after another) gets a new one.
        loop = asyncio.get_running_loop()
        if self._slots is None or self._loop is not loop:
            self._slots, self._loop = asyncio.Semaphore(self._capacity), loop
        return self._slots

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """`httpx.AsyncClient.request` on a free connection."""
        slots = self._semaphore()
        if slots.locked():
            try:
                async with asyncio.timeout(self._pool_timeout):
                    await slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout("no free connection within the pool timeout") from None
        else:
            await slots.acquire()
        busy = self._busy
        index = busy.index(min(busy))
        busy[index] += 1
        try:
            return await self._clients[index].request(method, url, **kwargs)
        finally:
            busy[index] -= 1
            slots.release()

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
