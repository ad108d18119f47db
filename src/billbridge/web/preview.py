"""Dry runs of a workflow: the exact Customer.io requests it would make for an event.

    steps = await preview_workflow(services, workflow, event)
    [step.summary() for step in steps]   # {"action_index", "action", "status", "request", "reason"}

Nothing is sent and nothing is stored (the identity resolver may cache a customer it
read from Stripe, as it does for a real delivery). Used by `POST /api/workflows/{id}/test`,
and meant for the CLI and the dashboard's "Try it".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import anyio

from billbridge.billing.context import billing_context, deleted_policy_skip
from billbridge.config import Settings
from billbridge.customerio.requests import CioRequest
from billbridge.errors import StripeAPIError
from billbridge.identity import Person, Unresolved
from billbridge.services import Services
from billbridge.store.base import Store
from billbridge.workflows.late_events import LateSkip, send_now
from billbridge.workflows.model import Workflow
from billbridge.workflows.planner import Skip, plan_action
from billbridge.workflows.templates import TemplateError

StepStatus = Literal["planned", "skipped", "error"]


@dataclass(frozen=True)
class PreviewStep:
    """What one action would do: a request (`planned`), or why not (`skipped`, `error`)."""

    action_index: int
    action: str
    status: StepStatus
    request: dict[str, Any] | None = None  # CioRequest.summary(): never credentials
    reason: str | None = None
    planned: CioRequest | None = None  # the call itself, for "Try it"'s "send for real"

    def summary(self) -> dict[str, Any]:
        return {
            "action_index": self.action_index,
            "action": self.action,
            "status": self.status,
            "request": self.request,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Preview:
    """The person the event resolved to (None when unresolved) and each action's step."""

    person: Person | None
    steps: list[PreviewStep]


def _all(workflow: Workflow, status: StepStatus, reason: str) -> list[PreviewStep]:
    return [
        PreviewStep(index, action.type, status, reason=reason)
        for index, action in enumerate(workflow.actions)
    ]


def plan_steps(
    workflow: Workflow,
    event: dict[str, Any],
    person: Person,
    *,
    settings: Settings,
    store: Store,
) -> list[PreviewStep]:
    """Plan every action of `workflow` for `event` and `person` as a delivery would: with
    the billing profile and semantic changes as they are now (read, never written)."""
    steps: list[PreviewStep] = []
    memo: dict[Any, Any] = {}
    policy = settings.customer_deleted_policy
    for index, action in enumerate(workflow.actions):
        try:
            skip_reason = deleted_policy_skip(workflow, index, event, person, policy)
            if skip_reason is not None:
                steps.append(PreviewStep(index, action.type, "skipped", reason=skip_reason))
                continue
            extra = billing_context(
                store, workflow, index, event, person, memo=memo, record_links=False
            )
            planned = plan_action(
                workflow,
                index,
                event,
                person,
                identifier_mode=settings.identifier,
                profile=extra.profile,
                changes=extra.changes,
                deleted_policy=policy,
            )
        except (TemplateError, ValueError) as exc:
            steps.append(PreviewStep(index, action.type, "error", reason=str(exc)))
            continue
        if isinstance(planned, Skip):
            steps.append(PreviewStep(index, action.type, "skipped", reason=planned.reason))
            continue
        # Sent now, an event older than 72 h follows the workflow's late_events policy.
        created = event.get("created")
        sending, _late = send_now(
            planned,
            created=created if isinstance(created, int) else int(time.time()),
            now=time.time(),
            policy=workflow.late_events,
        )
        if isinstance(sending, LateSkip):
            steps.append(PreviewStep(index, action.type, "skipped", reason=sending.reason))
            continue
        steps.append(
            PreviewStep(index, action.type, "planned", request=sending.summary(), planned=sending)
        )
    return steps


def preview_sync(services: Services, workflow: Workflow, event: dict[str, Any]) -> Preview:
    """Resolve the person (may read the store and the Stripe API), then plan each action."""
    try:
        person = services.resolver.resolve(event)
    except StripeAPIError as exc:
        return Preview(None, _all(workflow, "error", f"could not resolve the person: {exc}"))
    if isinstance(person, Unresolved):
        return Preview(None, _all(workflow, "skipped", person.reason))
    steps = plan_steps(workflow, event, person, settings=services.settings, store=services.store)
    return Preview(person, steps)


async def preview_workflow(
    services: Services, workflow: Workflow, event: dict[str, Any]
) -> Preview:
    """Dry-run `workflow` on `event` in a worker thread (resolution may block on I/O)."""
    return await anyio.to_thread.run_sync(lambda: preview_sync(services, workflow, event))
