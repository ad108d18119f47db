"""Services: the long-lived parts of a running Billbridge (`composition.build_services`)."""

from __future__ import annotations

from dataclasses import dataclass

from billbridge.config import Settings
from billbridge.credentials import CredentialsProvider
from billbridge.customerio.client import CustomerIOClient
from billbridge.delivery.retry import RetryPolicy
from billbridge.identity import IdentityResolver
from billbridge.observability import Metrics
from billbridge.secret_box import SecretBox
from billbridge.store.base import Store
from billbridge.stripe.api import StripeAPI
from billbridge.stripe.endpoint_sync import EndpointWatch
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
    secret_box: SecretBox

    @property
    def stripe_api(self) -> StripeAPI | None:
        """The Stripe client for the current key (environment or dashboard), or None."""
        return self.credentials.stripe_api()

    async def aclose(self) -> None:
        await self.cio.aclose()
        self.credentials.close()
        self.store.close()
