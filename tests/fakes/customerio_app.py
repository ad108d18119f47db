"""The fake Customer.io ASGI app: routing, auth, App rate limit, fault injection, `/_fake/` API.

Served by `tests/fakes/customerio.py` (in a thread or as a process). Routes: Track v1 under
`/api/v1/`, Track v2 `/api/v2/entity|batch`, App `/v1/send/email` and
`/v1/campaigns/{id}/triggers`, inspection under `/_fake/`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from tests.fakes.customerio_state import (
    MAX_BATCH_BYTES,
    MAX_OPERATION_BYTES,
    V1_MERGE_KEYS,
    LimitMode,
    Rejected,
    Workspace,
    app_error,
    is_int,
    new_delivery_id,
    one_identifier,
    person_kind,
    v1_error,
    v2_problem,
    validate_send_email,
    validate_trigger,
    validate_v1_event,
)

SITE_ID = "fake-site-id"
TRACK_API_KEY = "fake-track-key"
APP_API_KEY = "fake-app-key"
REGION_URLS = {"us": "https://track.customer.io", "eu": "https://track-eu.customer.io"}
Send = Callable[[dict[str, Any]], Any]
Receive = Callable[[], Any]
Result = tuple[int, Any, dict[str, str]]


@dataclass
class Fault:
    """One injected misbehaviour, matched against each incoming API request in order.

    `status`: answer this status without acting (e.g. 503, 429 with `retry_after`, 307 with
    `headers={"location": …}`). `delay`: wait this many seconds before answering (the request
    IS acted on first, as a slow real server would). `transit`: wait this many seconds
    before acting (a slow network on the way in: requests sent in one order may arrive in
    another). `drop`: close the connection without an answer (acted on first only when
    `apply` is true). `count`: how many requests it hits
    (None = until cleared). `path_prefix` / `method`: limit it to some requests.
    """

    status: int | None = None
    retry_after: str | None = None
    delay: float = 0.0
    transit: float = 0.0
    drop: bool = False
    apply: bool = False
    count: int | None = 1
    path_prefix: str | None = None
    method: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        if known.get("retry_after") is not None:
            known["retry_after"] = str(known["retry_after"])
        return cls(**known)

    def matches(self, method: str, path: str) -> bool:
        if self.count is not None and self.count <= 0:
            return False
        if self.method and self.method.upper() != method:
            return False
        return not self.path_prefix or path.startswith(self.path_prefix)


@dataclass
class FakeConfig:
    """Workspace settings of the fake; `POST /_fake/config` changes them at run time."""

    site_id: str = SITE_ID
    track_api_key: str = TRACK_API_KEY
    app_api_key: str = APP_API_KEY
    region: str = "us"
    environment_id: int = 101
    known_broadcasts: list[int] | None = None  # None = every broadcast id exists
    known_segments: list[int] | None = None  # None = every manual segment id exists
    app_rate_limit: int | None = 10  # requests per second on the App API; None = off
    broadcast_rate_limit: bool = False  # 1 trigger per 10 s (Customer.io's limit) when on
    limit_mode: LimitMode = "record"  # over-limit attributes/events: record or reject (400)
    forbidden_extensions: list[str] = field(default_factory=list)


class FakeCustomerIOApp:
    """The ASGI application: routing, auth, rate limit, faults, request log."""

    def __init__(self, config: FakeConfig, state_file: Path | None = None) -> None:
        self.defaults = FakeConfig(**asdict(config))
        self.config = config
        self.workspace = Workspace(limit_mode=config.limit_mode, journal=state_file)
        self.lock = self.workspace.lock
        self.requests: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self.outage = False
        self.stopping = threading.Event()
        self._seq = 0
        self._routes = self._route_table()

    def reset(self) -> None:
        """Forget all data, requests and faults; restore the configuration given at start."""
        self.workspace.reset()
        with self.lock:
            self.requests.clear()
            self.faults.clear()
            self.outage = False
            self.config = FakeConfig(**asdict(self.defaults))
            self.workspace.limit_mode = self.config.limit_mode

    def configure(self, **changes: Any) -> None:
        with self.lock:
            for name, value in changes.items():
                if name not in FakeConfig.__dataclass_fields__:
                    raise ValueError(f"unknown fake setting {name}")
                setattr(self.config, name, value)
            self.workspace.limit_mode = self.config.limit_mode

    def add_fault(self, fault: Fault) -> None:
        with self.lock:
            self.faults.append(fault)

    # ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        method = scope["method"]
        query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
        if path.startswith("/_fake/"):
            status, payload, extra = self._inspect(method, path[len("/_fake/") :], query, raw)
            await _respond(send, status, payload, extra)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        api = "track" if path.startswith("/api/") else "app" if path.startswith("/v1/") else None
        authorized = self._authorized(api, headers.pop("authorization", None))
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        with self.lock:
            self._seq += 1
            seq = self._seq
            fault = next((f for f in self.faults if f.matches(method, path)), None)
            if fault is not None and fault.count is not None:
                fault.count -= 1
            outage = self.outage
        if fault is not None and fault.transit > 0:
            await self._pause(fault.transit)
        result: Result | None
        if outage:
            result = (503, {"meta": {"error": "Service Unavailable"}}, {})
        elif fault is not None and fault.status is not None:
            extra = dict(fault.headers)
            if fault.retry_after is not None:
                extra["retry-after"] = fault.retry_after
            result = (fault.status, fault.body if fault.body is not None else {}, extra)
        elif fault is not None and fault.drop and not fault.apply:
            result = None
        else:
            result = self._handle(
                method, path, query=query, raw=raw, body=body, api=api, authorized=authorized
            )
        record = {
            "seq": seq,
            "time": time.time(),
            "method": method,
            "path": path,
            "query": query,
            "headers": headers,
            "authorized": authorized,
            "api": api,
            "body": body,
            "status": None if result is None or (fault and fault.drop) else result[0],
            "response": None if result is None else result[1],
            "fault": None if fault is None else asdict(fault),
        }
        with self.lock:
            self.requests.append(record)
        if fault is not None and fault.delay > 0:
            await self._pause(fault.delay)
        if result is None or (fault is not None and fault.drop):
            _drop_connection(send)
            return
        await _respond(send, *result)

    async def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        # Sliced so that stop() ends a long delay at once (a threading.Event, no loop).
        while time.monotonic() < deadline and not self.stopping.is_set():  # noqa: ASYNC110
            await asyncio.sleep(min(0.02, max(0.0, deadline - time.monotonic())))

    def _authorized(self, api: str | None, header: str | None) -> bool:
        if api is None or header is None:
            return False
        scheme, _, credentials = header.partition(" ")
        if api == "track" and scheme.lower() == "basic":
            try:
                pair = base64.b64decode(credentials, validate=True).decode()
            except ValueError:
                return False
            return pair == f"{self.config.site_id}:{self.config.track_api_key}"
        if api == "app" and scheme.lower() == "bearer":
            return credentials == self.config.app_api_key
        return False

    # The APIs --------------------------------------------------------------------------

    def _handle(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str],
        raw: bytes,
        body: Any,
        api: str | None,
        authorized: bool,
    ) -> Result:
        parts = [unquote(part) for part in path.split("/")[1:]]
        route = self._route(method, parts, api)
        if route is None:
            return self._not_found(api)
        if route == "method":
            return 405, {"meta": {"error": "Method Not Allowed"}}, {}
        if not authorized:
            if api == "app":
                return 401, {"errors": [{"detail": "Unauthorized request", "status": "401"}]}, {}
            return 401, {"meta": {"error": "Unauthorized request"}}, {}
        if isinstance(body, str):
            return 400, {"meta": {"errors": ["request body is not valid JSON"]}}, {}
        with self.lock:
            if api == "app":
                limited = self._rate_limited()
                if limited is not None:
                    return limited
            try:
                result: Result = route(parts, query, raw, body)
            except Rejected as rejected:
                return rejected.status, rejected.body, {}
            return result

    def _not_found(self, api: str | None) -> Result:
        if api == "app":
            return 404, {"errors": [{"detail": "Not Found", "status": "404"}]}, {}
        return 404, {"meta": {"error": "Not Found"}}, {}

    def _route(self, method: str, parts: list[str], api: str | None) -> Any:
        """The handler for a path, None for an unknown path, "method" for a wrong method."""
        wrong_method = False
        for route_method, pattern, handler in self._routes:
            if len(pattern) != len(parts):
                continue
            if all(p is None or p == part for p, part in zip(pattern, parts, strict=True)):
                if any(part == "" for part in parts):
                    return None
                if route_method == method:
                    return handler
                wrong_method = True
        return "method" if wrong_method else None

    def _route_table(self) -> list[tuple[str, tuple[str | None, ...], Any]]:
        return [
            ("PUT", ("api", "v1", "customers", None), self._identify),
            ("DELETE", ("api", "v1", "customers", None), self._delete),
            ("POST", ("api", "v1", "customers", None, "events"), self._event),
            ("POST", ("api", "v1", "customers", None, "suppress"), self._suppress),
            ("POST", ("api", "v1", "customers", None, "unsuppress"), self._unsuppress),
            ("PUT", ("api", "v1", "customers", None, "devices"), self._device),
            ("DELETE", ("api", "v1", "customers", None, "devices", None), self._delete_device),
            ("POST", ("api", "v1", "events"), self._anonymous_event),
            ("POST", ("api", "v1", "merge_customers"), self._merge),
            ("POST", ("api", "v1", "segments", None, "add_customers"), self._segment_add),
            ("POST", ("api", "v1", "segments", None, "remove_customers"), self._segment_remove),
            ("GET", ("api", "v1", "accounts", "region"), self._region),
            ("POST", ("api", "v2", "entity"), self._entity),
            ("POST", ("api", "v2", "batch"), self._batch),
            ("POST", ("v1", "send", "email"), self._send_email),
            ("POST", ("v1", "campaigns", None, "triggers"), self._trigger),
        ]

    def _rate_limited(self) -> Result | None:
        limit = self.config.app_rate_limit
        if not limit:
            return None
        calls, now = self.workspace.app_calls, time.monotonic()
        while calls and calls[0] <= now - 1.0:
            calls.popleft()
        if len(calls) >= limit:
            detail = f"rate limited to {limit} requests per 1s (reference {self._seq:06x})"
            return 429, {"errors": [{"detail": detail, "status": "429"}]}, {"retry-after": "1"}
        calls.append(now)
        return None

    def _person(self, identifier: str) -> tuple[str, str]:
        if len(identifier.encode()) > 150:
            self.workspace._limits([f"identifier longer than 150 bytes: {identifier[:20]}…"])
        return person_kind(identifier)

    def _identify(self, parts: list[str], query: dict[str, str], raw: bytes, body: Any) -> Result:
        if not isinstance(body, dict):
            raise v1_error("request body must be a JSON object of attributes")
        kind, value = self._person(parts[3])
        self.workspace.check_attributes(body)
        self.workspace.identify(kind, value, body)
        return 200, {}, {}

    def _delete(self, parts: list[str], query: dict[str, str], raw: bytes, body: Any) -> Result:
        self.workspace.delete(*self._person(parts[3]))
        return 200, {}, {}

    def _suppress(self, parts: list[str], query: dict[str, str], raw: bytes, body: Any) -> Result:
        self.workspace.suppress(*self._person(parts[3]))
        return 200, {}, {}

    def _unsuppress(self, parts: list[str], query: dict[str, str], raw: bytes, body: Any) -> Result:
        self.workspace.unsuppress(*self._person(parts[3]))
        return 200, {}, {}

    def _event(self, parts: list[str], query: dict[str, str], raw: bytes, body: Any) -> Result:
        event = validate_v1_event(body, anonymous=False)
        self.workspace.check_event(event["name"], event["data"])
        kind, value = self._person(parts[3])
        event.update(customer=value, api="v1", received_at=time.time())
        self.workspace.track(event, kind, value)
        return 200, {}, {}

    def _anonymous_event(
        self, parts: list[str], query: dict[str, str], raw: bytes, body: Any
    ) -> Result:
        event = validate_v1_event(body, anonymous=True)
        self.workspace.check_event(event["name"], event["data"])
        event.update(customer=None, api="v1", received_at=time.time())
        self.workspace.track(event, None, None)
        return 200, {}, {}

    def _device(self, parts: list[str], query: dict[str, str], raw: bytes, body: Any) -> Result:
        device = body.get("device") if isinstance(body, dict) else None
        problems = []
        if not isinstance(device, dict) or not device.get("id"):
            problems.append("device.id is required")
        if not isinstance(device, dict) or device.get("platform") not in ("ios", "android"):
            problems.append("device.platform must be ios or android")
        if problems:
            raise v1_error(*problems)
        assert isinstance(device, dict)
        self.workspace.set_device(*self._person(parts[3]), device)
        return 200, {}, {}

    def _delete_device(
        self, parts: list[str], query: dict[str, str], raw: bytes, body: Any
    ) -> Result:
        self.workspace.delete_device(*self._person(parts[3]), parts[5])
        return 200, {}, {}

    def _merge(self, parts: list[str], query: dict[str, str], raw: bytes, body: Any) -> Result:
        if not isinstance(body, dict):
            raise Rejected(400, {"meta": {"error": "request body must be a JSON object"}})
        try:
            primary = one_identifier(body.get("primary"), V1_MERGE_KEYS, "primary")
            secondary = one_identifier(body.get("secondary"), V1_MERGE_KEYS, "secondary")
        except ValueError as exc:
            raise Rejected(400, {"meta": {"error": str(exc)}}) from None
        self.workspace.merge(primary, secondary)
        return 200, {}, {}

    def _segment(self, parts: list[str], query: dict[str, str], body: Any, *, add: bool) -> Result:
        if not parts[3].isdigit():
            raise v1_error("segment id must be an integer")
        segment_id = int(parts[3])
        known = self.config.known_segments
        if known is not None and segment_id not in known:
            return 404, {"meta": {"errors": [f"segment {segment_id} not found"]}}, {}
        if query.get("id_type", "id") not in ("id", "email", "cio_id"):
            raise v1_error("id_type must be id, email or cio_id")
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not 1 <= len(ids) <= 1000:
            raise v1_error("ids must be a list of 1 to 1000 identifiers")
        if not all(isinstance(item, str) and item for item in ids):
            raise v1_error("every id must be a non-empty string")
        self.workspace.segment(segment_id, ids, add=add)
        return 200, {}, {}

    def _segment_add(
        self, parts: list[str], query: dict[str, str], raw: bytes, body: Any
    ) -> Result:
        return self._segment(parts, query, body, add=True)

    def _segment_remove(
        self, parts: list[str], query: dict[str, str], raw: bytes, body: Any
    ) -> Result:
        return self._segment(parts, query, body, add=False)

    def _region(self, parts: list[str], query: dict[str, str], raw: bytes, body: Any) -> Result:
        region = self.config.region
        payload = {
            "url": REGION_URLS.get(region, REGION_URLS["us"]),
            "region": region,
            "environment_id": self.config.environment_id,
        }
        return 200, payload, {}

    def _apply_v2(self, operation: dict[str, Any]) -> None:
        workspace = self.workspace
        if operation["type"] != "person":
            workspace.record_object(operation)
            return
        action = operation["action"]
        if action == "merge":
            workspace.merge(
                one_identifier(operation["primary"], V1_MERGE_KEYS, "primary"),
                one_identifier(operation["secondary"], V1_MERGE_KEYS, "secondary"),
            )
            return
        kind, value = one_identifier(
            operation["identifiers"], ("id", "email", "phone", "cio_id"), ""
        )
        if action == "identify":
            attributes = dict(operation.get("attributes") or {})
            if is_int(operation.get("timestamp")):
                attributes.setdefault("_timestamp", operation["timestamp"])
            workspace.check_attributes(attributes)
            workspace.identify(kind, value, attributes)
        elif action in ("event", "page", "screen"):
            data = operation.get("attributes") or {}
            workspace.check_event(operation["name"], data)
            event = {
                "name": operation["name"].strip(),
                "type": action,
                "data": data,
                "timestamp": operation.get("timestamp"),
                "id": operation.get("id"),
                "customer": value,
                "api": "v2",
                "received_at": time.time(),
            }
            workspace.track(event, kind, value)
        elif action == "delete":
            workspace.delete(kind, value)
        elif action == "suppress":
            workspace.suppress(kind, value)
        elif action == "unsuppress":
            workspace.unsuppress(kind, value)
        elif action == "add_device":
            workspace.set_device(kind, value, operation["device"])
        elif action == "delete_device":
            token = str((operation.get("device") or {}).get("token"))
            workspace.delete_device(kind, value, token)
        else:
            workspace.record_object(operation)

    def _entity(self, parts: list[str], query: dict[str, str], raw: bytes, body: Any) -> Result:
        if len(raw) > MAX_OPERATION_BYTES:
            message = f"request is {len(raw)} bytes; the limit is 32 KB"
            return 400, {"errors": [{"reason": "too_large", "field": "", "message": message}]}, {}
        problem = v2_problem(body)
        if problem is not None:
            return 400, {"errors": [problem]}, {}
        self._apply_v2(body)
        return 200, {}, {}

    def _batch(self, parts: list[str], query: dict[str, str], raw: bytes, body: Any) -> Result:
        if len(raw) >= MAX_BATCH_BYTES:
            message = f"request is {len(raw)} bytes; a batch must be smaller than 500 KB"
            return 400, {"errors": [{"reason": "too_large", "field": "", "message": message}]}, {}
        operations = body.get("batch") if isinstance(body, dict) else None
        if not isinstance(operations, list) or not operations:
            message = "batch must be a non-empty list of operations"
            return (
                400,
                {"errors": [{"reason": "required", "field": "batch", "message": message}]},
                {},
            )
        errors = []
        for index, operation in enumerate(operations):
            problem = v2_problem(operation)
            if problem is None:
                self._apply_v2(operation)
            else:
                errors.append({"batch_index": index, **problem})
        if errors:
            return 207, {"errors": errors}, {}
        return 200, {}, {}

    def _send_email(self, parts: list[str], query: dict[str, str], raw: bytes, body: Any) -> Result:
        validate_send_email(body, {ext.lower() for ext in self.config.forbidden_extensions})
        queued_at = int(time.time())
        payload: dict[str, Any] = {"delivery_id": new_delivery_id(), "queued_at": queued_at}
        if is_int(body.get("send_at")) and body["send_at"] > queued_at:
            payload["send_at"] = body["send_at"]
        self.workspace.record_send({**payload, "body": body, "received_at": time.time()})
        return 200, payload, {}

    def _trigger(self, parts: list[str], query: dict[str, str], raw: bytes, body: Any) -> Result:
        if not parts[2].isdigit():
            return self._not_found("app")
        broadcast_id = int(parts[2])
        known = self.config.known_broadcasts
        if known is not None and broadcast_id not in known:
            raise app_error(404, f"broadcast {broadcast_id} not found")
        if self.config.broadcast_rate_limit:
            wait = self.workspace.last_broadcast + 10.0 - time.monotonic()
            if wait > 0:
                detail = "rate limited to 1 requests per 10s"
                headers = {"retry-after": str(math.ceil(wait))}
                return 429, {"errors": [{"detail": detail, "status": "429"}]}, headers
        validate_trigger(body, self.workspace)
        self.workspace.last_broadcast = time.monotonic()
        trigger_id = len(self.workspace.triggers) + 1
        record = {"id": trigger_id, "broadcast_id": broadcast_id, "body": body}
        self.workspace.record_trigger({**record, "received_at": time.time()})
        return 200, {"id": trigger_id}, {}

    # Inspection API ----------------------------------------------------------------------

    def _inspect(self, method: str, name: str, query: dict[str, str], raw: bytes) -> Result:
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return 400, {"error": "body is not JSON"}, {}
        workspace = self.workspace
        if method == "GET":
            with self.lock:
                if name == "health":
                    return 200, {"ok": True}, {}
                if name == "requests":
                    since, limit = int(query.get("since", 0)), int(query.get("limit", 10**9))
                    items = [r for r in self.requests if r["seq"] > since][:limit]
                    return 200, {"requests": items}, {}
                if name == "events":
                    return 200, {"events": list(workspace.events)}, {}
                if name == "sends":
                    return 200, {"sends": list(workspace.sends)}, {}
                if name == "triggers":
                    return 200, {"triggers": list(workspace.triggers)}, {}
                if name == "segments":
                    segments = {str(k): sorted(v) for k, v in workspace.segments.items()}
                    return 200, {"segments": segments}, {}
                if name == "violations":
                    return 200, {"violations": list(workspace.violations)}, {}
                if name == "faults":
                    return 200, self._faults_json(), {}
                if name == "config":
                    return 200, asdict(self.config), {}
                if name == "stats":
                    return 200, self._stats(), {}
            if name == "people":
                return 200, {"people": workspace.snapshot_people()}, {}
        if method == "POST" and name == "reset":
            self.reset()
            return 200, {"ok": True}, {}
        if method == "POST" and name == "config":
            try:
                self.configure(**body)
            except ValueError as exc:
                return 400, {"error": str(exc)}, {}
            return 200, asdict(self.config), {}
        if method in ("POST", "DELETE") and name == "faults":
            with self.lock:
                if method == "DELETE" or body.get("clear"):
                    self.faults.clear()
                    self.outage = False
                if "outage" in body:
                    self.outage = bool(body["outage"])
                for item in body.get("add", []):
                    self.faults.append(Fault.from_json(item))
                return 200, self._faults_json(), {}
        return 404, {"error": f"no inspection endpoint {method} /_fake/{name}"}, {}

    def _faults_json(self) -> dict[str, Any]:
        return {"outage": self.outage, "faults": [asdict(fault) for fault in self.faults]}

    def _stats(self) -> dict[str, Any]:
        by_status: dict[str, int] = {}
        for record in self.requests:
            key = str(record["status"])
            by_status[key] = by_status.get(key, 0) + 1
        workspace = self.workspace
        return {
            "requests": len(self.requests),
            "by_status": by_status,
            "people": len(workspace.people),
            "events": len(workspace.events),
            "duplicate_events": workspace.duplicate_events,
            "sends": len(workspace.sends),
            "triggers": len(workspace.triggers),
        }


async def _respond(send: Send, status: int, payload: Any, headers: dict[str, str]) -> None:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    raw_headers += [(k.lower().encode(), str(v).encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": data})


def _drop_connection(send: Send) -> None:
    """Close the TCP connection without an answer (uvicorn's `send` is a bound method of the
    request cycle, which holds the transport)."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise RuntimeError("this server does not let the fake drop a connection")
    cycle.disconnected = True  # type: ignore[union-attr]
    transport.close()
