"""The ASGI app: routes, and a lifespan that opens the store and runs the in-process worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import anyio
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from billbridge import __version__
from billbridge.accounts import ensure_admin_from_env
from billbridge.alerts.monitor import start_alert_monitor
from billbridge.config import Settings, dev_webhook_secret
from billbridge.delivery.worker import build_worker
from billbridge.errors import ConfigurationError
from billbridge.ingest import IngestService
from billbridge.observability import Metrics
from billbridge.services import Services, build_services, freeze_startup_heap
from billbridge.stripe.reconcile import start_periodic_reconcile
from billbridge.stripe.webhook_setup import saved_webhook_secrets
from billbridge.web.api import build_api_router
from billbridge.web.dashboard import install_dashboard
from billbridge.web.headers import SecurityHeaders
from billbridge.web.openapi import install_openapi
from billbridge.web.pages_access import install_access

log = structlog.get_logger("billbridge.app")

WEBHOOK_PATH = "/webhooks/stripe"


def webhook_secrets_for(settings: Settings, *, dev: bool) -> tuple[str, ...]:
    """The secrets webhooks are verified with: STRIPE_WEBHOOK_SECRET, the secret
    `setup-webhook` saved in the var directory, and under `--dev` the generated
    development secret kept there too."""
    secrets = settings.webhook_secrets + tuple(
        s for s in saved_webhook_secrets(settings.var_dir) if s not in settings.webhook_secrets
    )
    if dev and not settings.webhook_secrets:
        secrets += (dev_webhook_secret(settings.var_dir),)
    if secrets:
        return secrets
    raise ConfigurationError(
        "STRIPE_WEBHOOK_SECRET is not set: set it to your endpoint's signing secret "
        "(whsec_..., several separated by commas), or start with `billbridge serve --dev` "
        "(what `make run` does) to use a generated development secret, or create the "
        "endpoint with `billbridge setup-webhook --url URL` (it saves the secret)"
    )


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


def create_app(
    settings: Settings, *, run_worker: bool = True, dev: bool = False, freeze_heap: bool = False
) -> FastAPI:
    """Build the app. Webhook secrets are checked now, so a bad configuration fails at once.
    `freeze_heap` (the `serve` process; not an app embedded in tests) freezes the start-up
    heap once the services are built (`freeze_startup_heap`)."""
    secrets = webhook_secrets_for(settings, dev=dev)
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await anyio.to_thread.run_sync(lambda: build_services(settings, metrics=metrics))
        metrics.watch_store(services.store.stats)
        ingest = IngestService(
            settings=settings,
            store=services.store,
            catalog=services.catalog,
            metrics=metrics,
            secrets=secrets,
        )
        app.state.services = services
        app.state.ingest = ingest
        await anyio.to_thread.run_sync(lambda: ensure_admin_from_env(settings, services.store))
        stop = asyncio.Event()
        worker_task: asyncio.Task[None] | None = None
        if run_worker:
            worker_task = asyncio.create_task(build_worker(services).run(stop))
        alerts_task = start_alert_monitor(services, stop) if run_worker else None
        reconcile_task = start_periodic_reconcile(services, ingest, stop)  # None when off
        log.info(
            "billbridge ready",
            version=__version__,
            database="sqlite" if settings.is_sqlite else "postgresql",
            worker=run_worker,
            dry_run=settings.dry_run,
            workflows_enabled=sum(1 for w in services.catalog.all() if w.enabled),
        )
        if freeze_heap:
            freeze_startup_heap()
        try:
            yield
        finally:
            stop.set()
            if worker_task is not None:
                await worker_task
            if alerts_task is not None:
                await alerts_task
            if reconcile_task is not None:
                await reconcile_task
            await services.aclose()

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

    @app.post(
        WEBHOOK_PATH,
        tags=["webhooks"],
        summary="Receive a Stripe webhook",
        responses={
            200: {"description": "Stored (or a duplicate of a stored event)"},
            400: {"description": "Bad signature, stale timestamp, or not a Stripe event"},
            413: {"description": "Body over 1 MiB"},
            415: {"description": "Content-Type is not application/json"},
            503: {"description": "The store is unavailable; Stripe will retry"},
        },
    )
    async def stripe_webhook(request: Request) -> Response:
        # Documents the endpoint in /openapi.json; POSTs are answered by BillbridgeApp
        # before routing, so this runs only before the lifespan has set up ingest.
        ingest: IngestService = request.app.state.ingest
        return await ingest.handle(request)

    @app.get("/healthz", tags=["health"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="The database answers")
    async def readyz(request: Request) -> JSONResponse:
        services: Services = request.app.state.services
        ok = await anyio.to_thread.run_sync(services.store.ping)
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "database": ok},
            status_code=200 if ok else 503,
        )

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics")
    async def prometheus_metrics() -> PlainTextResponse:
        body = await anyio.to_thread.run_sync(metrics.render)
        return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)

    app.include_router(build_api_router())
    install_access(app, settings)  # login, sessions, /api/* guard, settings pages and API
    install_dashboard(app)  # overview, events, workflows, "Try it" and /static
    install_openapi(app)  # security schemes, error shapes, the webhook's body: /openapi.json
    app.add_middleware(SecurityHeaders)  # added last: it wraps the /api guard's answers too
    return app
