"""The ASGI app: routes, and a lifespan starting the process's parts (`composition.start_serve`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from billbridge import __version__
from billbridge.composition import (
    check_webhook_secrets,
    freeze_startup_heap,
    require_fleet_settings,
    start_serve,
)
from billbridge.config import Settings
from billbridge.health import metrics_response, readyz_response
from billbridge.ingest import IngestService
from billbridge.observability import Metrics
from billbridge.services import Services
from billbridge.web.api import build_api_router
from billbridge.web.api_privacy import build_privacy_api_router
from billbridge.web.dashboard import install_dashboard
from billbridge.web.headers import SecurityHeaders
from billbridge.web.openapi import install_openapi
from billbridge.web.pages_access import install_access

log = structlog.get_logger("billbridge.app")

WEBHOOK_PATH = "/webhooks/stripe"


# The webhook is answered by `BillbridgeApp.__call__`, not by a route; this documents it.
WEBHOOK_OPENAPI: dict[str, Any] = {
    "post": {
        "tags": ["webhooks"],
        "summary": "Receive a Stripe webhook",
        "description": "A Stripe event signed with `Stripe-Signature`; stored with its "
        "deliveries before the answer.",
        "operationId": "stripe_webhook",
        "parameters": [
            {
                "name": "Stripe-Signature",
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        "responses": {
            "200": {"description": "Stored (or a duplicate of a stored event)"},
            "400": {"description": "Bad signature, stale timestamp, or not a Stripe event"},
            "413": {"description": "Body over 1 MiB"},
            "415": {"description": "Content-Type is not application/json"},
            "503": {"description": "The store is unavailable; Stripe will retry"},
        },
    }
}


class BillbridgeApp(FastAPI):
    """FastAPI, except that `POST /webhooks/stripe` is answered before anything else.

    The webhook is the hot path and needs none of FastAPI's request machinery (its
    middleware stack, dependency solving, validation, the /api guard) nor Starlette's
    Request and Response objects: `IngestService.answer` works on the raw ASGI scope and
    messages. Every other request (and the lifespan) goes through FastAPI.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == WEBHOOK_PATH
            and scope["method"] == "POST"
            and hasattr(self.state, "ingest")
        ):
            ingest: IngestService = self.state.ingest
            try:
                status, body = await ingest.answer(scope, receive)
            except ClientDisconnect:  # the sender left before its body was complete
                return
            except Exception:  # a bug: Stripe gets a 500 and retries; nothing was acked
                log.exception("the webhook handler failed")
                status, body = 500, b'{"error":"internal error"}'
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await super().__call__(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        """FastAPI's schema plus `POST /webhooks/stripe`, which no route serves."""
        if self.openapi_schema is not None:
            return self.openapi_schema
        schema = super().openapi()  # cached by FastAPI as self.openapi_schema
        schema.setdefault("paths", {})[WEBHOOK_PATH] = WEBHOOK_OPENAPI
        return schema


def create_app(
    settings: Settings, *, run_worker: bool = True, dev: bool = False, freeze_heap: bool = False
) -> FastAPI:
    """Build the app. A configuration without any webhook secret fails now, at once
    (`check_webhook_secrets`). `freeze_heap` (the `serve` process; not an app embedded in
    tests) freezes the start-up heap once the services are built (`freeze_startup_heap`)."""
    require_fleet_settings(settings)
    check_webhook_secrets(settings, dev=dev)
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        running = await start_serve(settings, metrics=metrics, dev=dev, run_worker=run_worker)
        app.state.services = running.services
        app.state.ingest = running.ingest
        log.info(
            "billbridge ready",
            version=__version__,
            database="sqlite" if settings.is_sqlite else "postgresql",
            worker=run_worker,
            dry_run=settings.dry_run,
            workflows_enabled=sum(1 for w in running.services.catalog.all() if w.enabled),
        )
        if freeze_heap:
            freeze_startup_heap()
        try:
            yield
        finally:
            await running.aclose()

    app = BillbridgeApp(
        title="Billbridge",
        version=__version__,
        description="Stripe webhooks in, Customer.io calls out: nothing lost, nothing doubled.",
        lifespan=lifespan,
        # Swagger UI and ReDoc would load their scripts from a CDN on this origin, and no
        # dependency ships them: off. /openapi.json needs credentials like /api/* unless
        # BILLBRIDGE_PUBLIC_API_DOCS=true (ApiGuard).
        docs_url=None,
        redoc_url=None,
    )

    @app.get("/healthz", tags=["health"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="The database answers and its migrations are not behind this version's",
    )
    async def readyz(request: Request) -> JSONResponse:
        services: Services = request.app.state.services
        return await readyz_response(services.store)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics")
    async def prometheus_metrics() -> PlainTextResponse:
        return await metrics_response(metrics)

    app.include_router(build_api_router())
    app.include_router(build_privacy_api_router())
    install_access(app, settings)  # login, sessions, /api/* guard, settings pages and API
    install_dashboard(app)  # overview, events, workflows, "Try it" and /static
    install_openapi(app)  # security schemes, error shapes, the webhook's body: /openapi.json
    app.add_middleware(SecurityHeaders)  # added last: it wraps the /api guard's answers too
    return app
