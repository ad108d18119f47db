"""Services: the long-lived parts of a running Billbridge, built once from Settings."""

from __future__ import annotations

import gc
from dataclasses import dataclass

from billbridge.config import Settings
from billbridge.credentials import CredentialsProvider
from billbridge.customerio.client import CustomerIOClient
from billbridge.delivery.retry import RetryPolicy
from billbridge.identity import IdentityResolver
from billbridge.observability import Metrics
from billbridge.secret_box import SecretBox
from billbridge.store import open_store
from billbridge.store.base import Store
from billbridge.stripe.api import StripeAPI
from billbridge.stripe.endpoint_sync import EndpointWatch, needed_types
from billbridge.workflows.catalog import WorkflowCatalog


@dataclass
class Services:
    """Everything the HTTP app, the worker and the CLI share. Close it when done."""

    settings: Settings
    store: Store
    catalog: WorkflowCatalog
    resolver: IdentityResolver
    cio: CustomerIOClient
    retry_policy: RetryPolicy
    metrics: Metrics
    credentials: CredentialsProvider
    stripe_endpoint: EndpointWatch  # the webhook endpoint against the workflows' triggers

    @property
    def stripe_api(self) -> StripeAPI | None:
        """The Stripe client for the current key (environment or dashboard), or None."""
        return self.credentials.stripe_api()

    async def aclose(self) -> None:
        await self.cio.aclose()
        self.credentials.close()
        self.store.close()


def build_services(
    settings: Settings, *, migrate: bool = True, metrics: Metrics | None = None
) -> Services:
    """Open the store (migrating it), seed the default workflows, build the clients."""
    store = open_store(settings.database_url)
    if migrate:
        store.migrate()
    catalog = WorkflowCatalog(store)
    catalog.ensure_defaults()
    credentials = CredentialsProvider(settings, store, SecretBox.from_settings(settings))
    return Services(
        settings=settings,
        store=store,
        catalog=catalog,
        resolver=IdentityResolver(settings, store, None, stripe_api_source=credentials.stripe_api),
        cio=CustomerIOClient(settings, credentials=credentials.current),
        credentials=credentials,
        retry_policy=RetryPolicy.from_settings(settings),
        metrics=metrics or Metrics(),
        stripe_endpoint=EndpointWatch(credentials.current, lambda: needed_types(catalog.all())),
    )


def freeze_startup_heap() -> None:
    """Move every object allocated while starting (modules, the app, the services) out of
    the garbage collector's reach. Otherwise each full collection walks them all again:
    a pause of tens of milliseconds that every request in flight waits through (the
    ingest p99 at 64 connections fell from ~170 ms to ~65 ms)."""
    gc.collect()
    gc.freeze()
