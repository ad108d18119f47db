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

from billbridge import __version__
from billbridge.config import Settings, dev_webhook_secret
from billbridge.delivery.worker import build_worker
from billbridge.errors import ConfigurationError
from billbridge.ingest import IngestService
from billbridge.observability import Metrics
from billbridge.services import Services, build_services
from billbridge.web.api import build_api_router

log = structlog.get_logger("billbridge.app")


def webhook_secrets_for(settings: Settings, *, dev: bool) -> tuple[str, ...]:
    """The secrets webhooks are verified with: STRIPE_WEBHOOK_SECRET, or under `--dev` the
    generated development secret kept in the var directory."""
    if settings.webhook_secrets:
        return settings.webhook_secrets
    if dev:
        return (dev_webhook_secret(settings.var_dir),)
    raise ConfigurationError(
        "STRIPE_WEBHOOK_SECRET is not set: set it to your endpoint's signing secret "
        "(whsec_..., several separated by commas), or start with `billbridge serve --dev` "
        "(what `make run` does) to use a generated development secret"
    )


def create_app(settings: Settings, *, run_worker: bool = True, dev: bool = False) -> FastAPI:
    """Build the app. Webhook secrets are checked now, so a bad configuration fails at once."""
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
        stop = asyncio.Event()
        worker_task: asyncio.Task[None] | None = None
        if run_worker:
            worker_task = asyncio.create_task(build_worker(services).run(stop))
        log.info(
            "billbridge ready",
            version=__version__,
            database="sqlite" if settings.is_sqlite else "postgresql",
            worker=run_worker,
            dry_run=settings.dry_run,
            workflows_enabled=sum(1 for w in services.catalog.all() if w.enabled),
        )
        try:
            yield
        finally:
            stop.set()
            if worker_task is not None:
                await worker_task
            await services.aclose()

    app = FastAPI(
        title="Billbridge",
        version=__version__,
        description="Stripe webhooks in, Customer.io calls out: nothing lost, nothing doubled.",
        lifespan=lifespan,
    )

    @app.post(
        "/webhooks/stripe",
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
    return app
