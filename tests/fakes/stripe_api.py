"""A fake Stripe API on loopback, faithful to the documented v1 shapes Billbridge uses.

    with FakeStripe() as fake:
        fake.add_customer(id="cus_1", email="jane@example.com")
        settings = load_settings(STRIPE_API_KEY=fake.api_key, STRIPE_API_BASE=fake.base_url)

Bearer `sk_test_...` auth (Stripe's error envelope otherwise), form-encoded POSTs,
newest-first lists with `limit` / `starting_after` / `ending_before` / `has_more`,
`resource_missing` 404s, fault injection (429, 5xx, slow answers) and a request log.
"""

from __future__ import annotations

import asyncio
import collections
import secrets
import socket
import threading
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.stripe_expand import rendered

DEFAULT_API_KEY = "sk_test_fake_51BillbridgeKey000"
LIST_LIMIT_MAX = 100


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]  # lower-case names
    form: list[tuple[str, str]]


@dataclass
class _Fault:
    status: int
    remaining: int
    path_prefix: str | None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds


def _error(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"type": type_, "message": message}
    if code:
        body["code"] = code
        body["doc_url"] = f"https://docs.stripe.com/error-codes/{code.replace('_', '-')}"
    if param:
        body["param"] = param
    response_headers = {"request-id": "req_" + secrets.token_hex(7)}
    response_headers.update(headers or {})
    return JSONResponse({"error": body}, status_code=status, headers=response_headers)


def _missing(kind: str, object_id: str) -> JSONResponse:
    return _error(404, f"No such {kind}: '{object_id}'", code="resource_missing", param="id")


def _ok(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, headers={"request-id": "req_" + secrets.token_hex(7)})


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(18).replace("-", "").replace("_", "")[:24]


def _expand_of(request: Request, *, listing: bool) -> set[str]:
    """The request's `expand[]` paths (for a list, relative to each item: `data.` cut)."""
    paths = {v for k, v in request.query_params.multi_items() if k.startswith("expand")}
    if listing:
        paths = {p.removeprefix("data.") for p in paths if p.startswith("data.")}
    return paths


class FakeStripe:
    """A Starlette app under uvicorn on 127.0.0.1 (free port) in a background thread."""

    def __init__(self, api_key: str = DEFAULT_API_KEY, *, strict_key: bool = True) -> None:
        self.api_key = api_key
        self.strict_key = strict_key  # False: any sk_test_/rk_test_ key is accepted
        self.base_url = ""
        self.requests: list[RecordedRequest] = []
        self.customers: dict[str, dict[str, Any]] = {}
        self.charges: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self.webhook_endpoints: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        self.disputes: dict[str, dict[str, Any]] = {}
        self.livemode = False
        self.rate_limit: float | None = None  # requests per second; more in 1 s -> 429
        self._recent: collections.deque[float] = collections.deque()
        self._list_cache: dict[tuple[Any, ...], tuple[int, list[dict[str, Any]], dict[str, int]]]
        self._list_cache = {}
        self._seq = 0
        self._order: dict[str, int] = {}  # object id -> insertion sequence (tie-breaker)
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = self._build_app()

    # Lifecycle ----------------------------------------------------------------------------

    def start(self) -> FakeStripe:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            daemon=True,
            name="fake-stripe",
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake Stripe server did not start")
            time.sleep(0.005)  # polling a start flag with a deadline
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def reset(self) -> None:
        """Forget all state, faults and recorded requests (to reuse one running server)."""
        with self._lock:
            self.requests.clear()
            self.customers.clear()
            self.charges.clear()
            self.subscriptions.clear()
            self.events.clear()
            self.webhook_endpoints.clear()
            self.refunds.clear()
            self.invoices.clear()
            self.disputes.clear()
            self._order.clear()
            self._faults.clear()
            self._list_cache.clear()
            self._recent.clear()
            self.rate_limit = None
            self.livemode = False

    def __enter__(self) -> FakeStripe:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Seeding ------------------------------------------------------------------------------

    def _remember(self, object_id: str) -> None:
        self._seq += 1  # also the version the list cache checks
        self._order[object_id] = self._seq

    def add_customer(
        self,
        id: str | None = None,
        *,
        email: str | None = None,
        name: str | None = None,
        metadata: dict[str, str] | None = None,
        created: int | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Store a Customer (Stripe's shape) and return it."""
        customer_id = id or _new_id("cus_")
        customer: dict[str, Any] = {
            "id": customer_id,
            "object": "customer",
            "address": None,
            "balance": 0,
            "created": created or int(time.time()),
            "currency": "usd",
            "default_source": None,
            "delinquent": False,
            "description": None,
            "discount": None,
            "email": email,
            "invoice_prefix": secrets.token_hex(4).upper(),
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": None,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": self.livemode,
            "metadata": dict(metadata or {}),
            "name": name,
            "next_invoice_sequence": 1,
            "phone": None,
            "preferred_locales": [],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }
        customer.update(fields)
        with self._lock:
            self.customers[customer_id] = customer
            self._remember(customer_id)
        return customer

    def delete_customer(self, customer_id: str) -> None:
        """Delete it: the API then answers the deleted stub."""
        with self._lock:
            self._seq += 1
            self.customers[customer_id] = {
                "id": customer_id,
                "object": "customer",
                "deleted": True,
            }

    def add_charge(
        self,
        id: str | None = None,
        *,
        customer: str | None = None,
        email: str | None = None,
        receipt_email: str | None = None,
        amount: int = 2900,
        currency: str = "usd",
        status: str = "succeeded",
        **fields: Any,
    ) -> dict[str, Any]:
        """Store a Charge; `email` goes to `billing_details.email`."""
        charge_id = id or _new_id("ch_")
        charge: dict[str, Any] = {
            "id": charge_id,
            "object": "charge",
            "amount": amount,
            "amount_captured": amount if status == "succeeded" else 0,
            "amount_refunded": 0,
            "billing_details": {
                "address": None,
                "email": email,
                "name": None,
                "phone": None,
                "tax_id": None,
            },
            "captured": status == "succeeded",
            "created": int(time.time()),
            "currency": currency,
            "customer": customer,
            "disputed": False,
            "failure_code": None,
            "failure_message": None,
            "livemode": self.livemode,
            "metadata": {},
            "paid": status == "succeeded",
            "payment_intent": _new_id("pi_"),
            "receipt_email": receipt_email,
            "refunded": False,
            "status": status,
        }
        charge.update(fields)
        with self._lock:
            self.charges[charge_id] = charge
            self._remember(charge_id)
        return charge

    def add_subscription(self, subscription: dict[str, Any]) -> dict[str, Any]:
        """Store a Subscription object as given (e.g. a sample event's data.object)."""
        with self._lock:
            self.subscriptions[subscription["id"]] = subscription
            self._remember(subscription["id"])
        return subscription

    def add_object(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store any supported object (customer, subscription, charge, refund, invoice,
        dispute, event) under its `object` kind, as given."""
        table = {
            "customer": self.customers,
            "subscription": self.subscriptions,
            "charge": self.charges,
            "refund": self.refunds,
            "invoice": self.invoices,
            "dispute": self.disputes,
            "event": self.events,
        }[obj["object"]]
        with self._lock:
            table[obj["id"]] = obj
            self._remember(obj["id"])
        return obj

    def add_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """Store an Event (e.g. from `sample_event`); lists order by `created`, newest first."""
        with self._lock:
            self.events[event["id"]] = event
            self._remember(event["id"])
        return event

    # Fault injection and inspection -------------------------------------------------------

    def fail_next(
        self,
        status: int,
        *,
        count: int = 1,
        path_prefix: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next `count` matching requests with `status` (429, 500, 503...)."""
        with self._lock:
            self._faults.append(_Fault(status, count, path_prefix, dict(headers or {})))

    def slow_next(self, seconds: float, *, count: int = 1, path_prefix: str | None = None) -> None:
        """Delay the next `count` matching answers by `seconds` (for client timeouts)."""
        with self._lock:
            self._faults.append(_Fault(0, count, path_prefix, delay=seconds))

    def requests_to(self, path: str, method: str = "GET") -> list[RecordedRequest]:
        """Recorded requests with exactly this method and path."""
        with self._lock:
            return [r for r in self.requests if r.path == path and r.method == method]

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # The app ------------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        routes = [
            Route("/v1/balance", self._balance, methods=["GET"]),
            Route("/v1/customers", self._list_customers, methods=["GET"]),
            Route("/v1/customers/{id}", self._get_customer, methods=["GET"]),
            Route("/v1/charges", self._list_charges, methods=["GET"]),
            Route("/v1/charges/{id}", self._get_charge, methods=["GET"]),
            Route("/v1/refunds", self._list_refunds, methods=["GET"]),
            Route("/v1/refunds/{id}", self._get_refund, methods=["GET"]),
            Route("/v1/disputes", self._list_disputes, methods=["GET"]),
            Route("/v1/disputes/{id}", self._get_dispute, methods=["GET"]),
            Route("/v1/invoices", self._list_invoices, methods=["GET"]),
            Route("/v1/invoices/{id}", self._get_invoice, methods=["GET"]),
            Route("/v1/subscriptions", self._list_subscriptions, methods=["GET"]),
            Route("/v1/subscriptions/{id}", self._get_subscription, methods=["GET"]),
            Route("/v1/events", self._list_events, methods=["GET"]),
            Route("/v1/events/{id}", self._get_event, methods=["GET"]),
            Route("/v1/webhook_endpoints", self._webhook_endpoints, methods=["GET", "POST"]),
            Route(
                "/v1/webhook_endpoints/{id}",
                self._webhook_endpoint,
                methods=["GET", "POST", "DELETE"],
            ),
        ]
        app = Starlette(routes=routes)
        fake = self

        class _Gate:
            """Records, authenticates and injects faults before any route runs."""

            def __init__(self, inner: Any) -> None:
                self.inner = inner

            async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
                if scope["type"] != "http":
                    await self.inner(scope, receive, send)
                    return
                request = Request(scope, receive)
                body = await request.body()
                form: list[tuple[str, str]] = []
                if body and request.headers.get("content-type", "").startswith(
                    "application/x-www-form-urlencoded"
                ):
                    form = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
                recorded = RecordedRequest(
                    method=request.method,
                    path=request.url.path,
                    query=list(request.query_params.multi_items()),
                    headers={k.lower(): v for k, v in request.headers.items()},
                    form=form,
                )
                with fake._lock:
                    fake.requests.append(recorded)
                    fault = fake._take_fault(recorded.path)
                scope.setdefault("state", {})["form"] = form

                async def replay() -> dict[str, Any]:
                    return {"type": "http.request", "body": body, "more_body": False}

                response: Response | None = fake._authenticate(recorded.headers)
                if response is None and fault is None and fake._over_rate():
                    fault = _Fault(429, 1, None)
                if response is None and fault is not None:
                    if fault.delay:
                        await asyncio.sleep(fault.delay)
                    if fault.status:
                        response = fake._fault_response(fault)
                if response is not None:
                    await response(scope, replay, send)
                    return
                await self.inner(scope, replay, send)

        return _Gate(app)  # type: ignore[return-value]

    def _over_rate(self) -> bool:
        """True when more than `rate_limit` requests arrived in the last second."""
        if self.rate_limit is None:
            return False
        now = time.monotonic()
        with self._lock:
            self._recent.append(now)
            while self._recent and self._recent[0] <= now - 1.0:
                self._recent.popleft()
            return len(self._recent) > self.rate_limit

    def _take_fault(self, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.path_prefix is None or path.startswith(fault.path_prefix):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    @staticmethod
    def _fault_response(fault: _Fault) -> Response:
        if fault.status == 429:
            return _error(
                429,
                "Too many requests hit the API too quickly. We recommend an exponential "
                "backoff of your requests.",
                code="rate_limit",
                headers=fault.headers,
            )
        if fault.status >= 500:
            return _error(
                fault.status,
                "An unknown error occurred",
                type_="api_error",
                headers=fault.headers,
            )
        return _error(fault.status, "Injected error", headers=fault.headers)

    def _authenticate(self, headers: dict[str, str]) -> Response | None:
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if not auth:
            return _error(
                401,
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY').",
            )
        valid = (
            token == self.api_key if self.strict_key else token.startswith(("sk_test_", "rk_test_"))
        )
        if scheme.lower() != "bearer" or not valid:
            masked = token[:8] + "*" * max(len(token) - 12, 0) + token[-4:]
            return _error(401, f"Invalid API Key provided: {masked}")
        return None

    # Handlers -----------------------------------------------------------------------------

    async def _balance(self, request: Request) -> Response:
        return _ok(
            {
                "object": "balance",
                "available": [{"amount": 0, "currency": "usd", "source_types": {"card": 0}}],
                "livemode": self.livemode,
                "pending": [{"amount": 0, "currency": "usd", "source_types": {"card": 0}}],
            }
        )

    async def _get_customer(self, request: Request) -> Response:
        expand = _expand_of(request, listing=False)
        return self._get(self.customers, "customer", request.path_params["id"], expand)

    async def _get_charge(self, request: Request) -> Response:
        return self._get(self.charges, "charge", request.path_params["id"])

    async def _get_refund(self, request: Request) -> Response:
        return self._get(self.refunds, "refund", request.path_params["id"])

    async def _get_invoice(self, request: Request) -> Response:
        return self._get(self.invoices, "invoice", request.path_params["id"])

    async def _get_dispute(self, request: Request) -> Response:
        return self._get(self.disputes, "dispute", request.path_params["id"])

    def _filtered(
        self, request: Request, table: dict[str, dict[str, Any]], url: str, *keys: str
    ) -> Response:
        """A list of `table` filtered by equality on the query parameters in `keys`."""
        wanted = {k: request.query_params[k] for k in keys if k in request.query_params}

        def build() -> list[dict[str, Any]]:
            with self._lock:
                items = list(table.values())
            return [o for o in items if all(o.get(k) == v for k, v in wanted.items())]

        return self._list(request, build, url, cache_key=(url, *sorted(wanted.items())))

    async def _list_charges(self, request: Request) -> Response:
        return self._filtered(request, self.charges, "/v1/charges", "customer", "payment_intent")

    async def _list_refunds(self, request: Request) -> Response:
        return self._filtered(request, self.refunds, "/v1/refunds", "charge", "payment_intent")

    async def _list_disputes(self, request: Request) -> Response:
        return self._filtered(request, self.disputes, "/v1/disputes", "charge", "payment_intent")

    async def _list_invoices(self, request: Request) -> Response:
        return self._filtered(
            request, self.invoices, "/v1/invoices", "customer", "subscription", "status"
        )

    async def _get_subscription(self, request: Request) -> Response:
        expand = _expand_of(request, listing=False)
        return self._get(self.subscriptions, "subscription", request.path_params["id"], expand)

    async def _get_event(self, request: Request) -> Response:
        return self._get(self.events, "event", request.path_params["id"])

    def _get(
        self,
        table: dict[str, dict[str, Any]],
        kind: str,
        object_id: str,
        expand: Collection[str] = (),
    ) -> Response:
        with self._lock:
            found = table.get(object_id)
        if found is None:
            return _missing(kind, object_id)
        return _ok(rendered(found, expand))

    async def _list_customers(self, request: Request) -> Response:
        with self._lock:
            items = [c for c in self.customers.values() if not c.get("deleted")]
        email = request.query_params.get("email")
        if email is not None:
            items = [c for c in items if c.get("email") == email]
        return self._list(
            request, lambda: items, "/v1/customers", cache_key=("cus", email), render=True
        )

    async def _list_subscriptions(self, request: Request) -> Response:
        with self._lock:
            items = list(self.subscriptions.values())
        customer = request.query_params.get("customer")
        if customer is not None:
            items = [s for s in items if s.get("customer") == customer]
        status = request.query_params.get("status")
        if status is None:
            items = [s for s in items if s.get("status") != "canceled"]
        elif status != "all":
            items = [s for s in items if s.get("status") == status]
        key = ("sub", customer, status)
        return self._list(request, lambda: items, "/v1/subscriptions", cache_key=key, render=True)

    async def _list_events(self, request: Request) -> Response:
        params = request.query_params
        with self._lock:
            items = list(self.events.values())
        created_filter = {op: params.get(f"created[{op}]") for op in ("gt", "gte", "lt", "lte")}
        exact = params.get("created")
        try:
            bounds = {op: int(v) for op, v in created_filter.items() if v is not None}
            exact_value = int(exact) if exact is not None else None
        except ValueError:
            return _error(400, "Invalid integer: created", param="created")
        if exact_value is not None:
            items = [e for e in items if e["created"] == exact_value]
        checks = {
            "gt": lambda c, v: c > v,
            "gte": lambda c, v: c >= v,
            "lt": lambda c, v: c < v,
            "lte": lambda c, v: c <= v,
        }
        for op, value in bounds.items():
            items = [e for e in items if checks[op](e["created"], value)]
        types = params.getlist("types[]") or [
            value for key, value in params.multi_items() if key.startswith("types[")
        ]
        event_type = params.get("type")
        if types and event_type:
            return _error(
                400, "You may only specify one of these parameters: type, types.", param="types"
            )
        if len(types) > 20:
            return _error(400, "types: at most 20 values", param="types")
        if types:
            items = [e for e in items if e["type"] in types]
        elif event_type:
            if event_type.endswith("*"):
                prefix = event_type[:-1]
                items = [e for e in items if e["type"].startswith(prefix)]
            else:
                items = [e for e in items if e["type"] == event_type]
        delivery_success = params.get("delivery_success")
        if delivery_success is not None:
            wanted = delivery_success == "true"
            items = [e for e in items if (e.get("pending_webhooks", 0) == 0) == wanted]
        return self._list(request, lambda: items, "/v1/events")

    def _list(
        self,
        request: Request,
        build: Any,
        url: str,
        *,
        cache_key: tuple[Any, ...] | None = None,
        render: bool = False,
    ) -> Response:
        """A Stripe list page of `build()`'s items (sorted lists are cached by `cache_key`
        until the fake's data changes, so paging through 10,000s of objects stays cheap);
        `render`: each item as Stripe renders it with the request's `expand[]`."""
        params = request.query_params
        try:
            limit = int(params.get("limit", "10"))
        except ValueError:
            return _error(400, "Invalid integer: limit", param="limit")
        if not 1 <= limit <= LIST_LIMIT_MAX:
            return _error(
                400,
                f"This value must be greater than or equal to 1 and less than or equal "
                f"to {LIST_LIMIT_MAX}.",
                param="limit",
            )
        starting_after = params.get("starting_after")
        ending_before = params.get("ending_before")
        # Only a continuation page reuses the order its first page computed.
        continuing = cache_key is not None and (starting_after or ending_before)
        cached = self._list_cache.get(cache_key) if continuing and cache_key else None
        if cached is not None and cached[0] == self._seq:
            _, items, positions = cached
        else:
            # Newest first; equal `created` keeps the later-added object first.
            items = sorted(
                build(),
                key=lambda o: (o.get("created", 0), self._order.get(o["id"], 0)),
                reverse=True,
            )
            positions = {o["id"]: index for index, o in enumerate(items)}
            if cache_key is not None:
                self._list_cache[cache_key] = (self._seq, items, positions)
        if starting_after and ending_before:
            return _error(
                400, "You may only specify one of these parameters: ending_before, starting_after."
            )
        if starting_after:
            if starting_after not in positions:
                return _missing(url.rsplit("/", 1)[-1].rstrip("s"), starting_after)
            rest = items[positions[starting_after] + 1 :]
            page, has_more = rest[:limit], len(rest) > limit
        elif ending_before:
            if ending_before not in positions:
                return _missing(url.rsplit("/", 1)[-1].rstrip("s"), ending_before)
            before = items[: positions[ending_before]]
            page, has_more = before[-limit:], len(before) > limit
        else:
            page, has_more = items[:limit], len(items) > limit
        if render:
            expand = _expand_of(request, listing=True)
            page = [rendered(item, expand) for item in page]
        return _ok({"object": "list", "data": page, "has_more": has_more, "url": url})

    async def _webhook_endpoints(self, request: Request) -> Response:
        if request.method == "GET":
            with self._lock:
                items = [self._public_endpoint(e) for e in self.webhook_endpoints.values()]
            return self._list(request, lambda: items, "/v1/webhook_endpoints")
        form: list[tuple[str, str]] = request.scope["state"]["form"]
        values = dict(form)
        url = values.get("url")
        events = [v for k, v in form if k.startswith("enabled_events[")]
        if not url:
            return _error(
                400, "Missing required param: url.", code="parameter_missing", param="url"
            )
        if not events:
            return _error(
                400,
                "Missing required param: enabled_events.",
                code="parameter_missing",
                param="enabled_events",
            )
        with self._lock:
            if len(self.webhook_endpoints) >= 16:
                return _error(400, "You have reached the maximum of 16 test webhook endpoints.")
        endpoint_id = _new_id("we_")
        endpoint = {
            "id": endpoint_id,
            "object": "webhook_endpoint",
            "api_version": values.get("api_version"),
            "application": None,
            "created": int(time.time()),
            "description": values.get("description"),
            "enabled_events": events,
            "livemode": self.livemode,
            "metadata": {k[len("metadata[") : -1]: v for k, v in form if k.startswith("metadata[")},
            "secret": "whsec_" + secrets.token_urlsafe(24),
            "status": "enabled",
            "url": url,
        }
        with self._lock:
            self.webhook_endpoints[endpoint_id] = endpoint
            self._remember(endpoint_id)
        return _ok(endpoint)  # the only answer that carries the secret

    async def _webhook_endpoint(self, request: Request) -> Response:
        endpoint_id = request.path_params["id"]
        with self._lock:
            endpoint = self.webhook_endpoints.get(endpoint_id)
            if endpoint is None:
                return _missing("webhook_endpoint", endpoint_id)
            if request.method == "DELETE":
                del self.webhook_endpoints[endpoint_id]
                return _ok({"id": endpoint_id, "object": "webhook_endpoint", "deleted": True})
            if request.method == "POST":
                form: list[tuple[str, str]] = request.scope["state"]["form"]
                values = dict(form)
                events = [v for k, v in form if k.startswith("enabled_events[")]
                if events:
                    endpoint["enabled_events"] = events
                for key in ("url", "description"):
                    if key in values:
                        endpoint[key] = values[key]
                if "disabled" in values:
                    endpoint["status"] = "disabled" if values["disabled"] == "true" else "enabled"
            return _ok(self._public_endpoint(endpoint))

    @staticmethod
    def _public_endpoint(endpoint: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in endpoint.items() if k != "secret"}


@pytest.fixture(scope="session")
def fake_stripe_server() -> Iterator[FakeStripe]:
    """One fake Stripe API for the whole session (starting one per test costs ~0.2 s)."""
    with FakeStripe() as fake:
        yield fake


@pytest.fixture
def fake_stripe(fake_stripe_server: FakeStripe) -> FakeStripe:
    """The shared fake Stripe API, emptied for this test."""
    fake_stripe_server.reset()
    return fake_stripe_server
