"""Services: the long-lived parts of a running Billbridge, built once from Settings."""

from __future__ import annotations

from dataclasses import dataclass

from billbridge.config import Settings
from billbridge.customerio.client import CustomerIOClient
from billbridge.delivery.retry import RetryPolicy
from billbridge.identity import IdentityResolver
from billbridge.observability import Metrics
from billbridge.store import open_store
from billbridge.store.base import Store
from billbridge.stripe.api import StripeAPI
from billbridge.workflows.catalog import WorkflowCatalog


@dataclass
class Services:
    """Everything the HTTP app, the worker and the CLI share. Close it when done."""

    settings: Settings
    store: Store
    catalog: WorkflowCatalog
    resolver: IdentityResolver
    stripe_api: StripeAPI | None
    cio: CustomerIOClient
    retry_policy: RetryPolicy
    metrics: Metrics

    async def aclose(self) -> None:
        await self.cio.aclose()
        if self.stripe_api is not None:
            self.stripe_api.close()
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
    stripe_api = StripeAPI(settings) if settings.stripe_api_key else None
    return Services(
        settings=settings,
        store=store,
        catalog=catalog,
        resolver=IdentityResolver(settings, store, stripe_api),
        stripe_api=stripe_api,
        cio=CustomerIOClient(settings),
        retry_policy=RetryPolicy.from_settings(settings),
        metrics=metrics or Metrics(),
    )
