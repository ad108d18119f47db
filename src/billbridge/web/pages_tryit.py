""" "Try it": run a workflow on a sample or a stored event, show the exact Customer.io
requests (a dry run, `preview_workflow`), and on a confirmed POST send them for real.

    GET  /workflows/{id}/try            choose the event
    POST /workflows/{id}/try            the dry run: each action's request, nothing sent
    POST /workflows/{id}/try/send       send the planned requests through services.cio

The event of a sample is carried in the form (a hidden field) so the requests sent are
exactly those shown; a stored event is read again by id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from billbridge.errors import DeliveryError
from billbridge.services import Services
from billbridge.store.personal import pruned_words
from billbridge.store.records import EventFilter, EventSummary
from billbridge.stripe.events import check_event_bounds
from billbridge.stripe.samples import SAMPLE_EVENT_TYPES, sample_event
from billbridge.web.auth import User
from billbridge.web.pages_common import (
    CSRF,
    CurrentUser,
    pretty_json,
    read_form,
    render,
    run_store,
    services_of,
)
from billbridge.web.preview import Preview, preview_workflow
from billbridge.workflows.model import Workflow

RECENT_EVENTS = 10  # stored events offered per trigger type
MAX_EVENT_BYTES = 1_048_576


@dataclass(frozen=True)
class SendResult:
    """What Customer.io answered to one request sent from "Try it"."""

    action_index: int
    action: str
    request_line: str
    ok: bool
    status_code: int | None
    body: str | None
    error: str | None
    duration_ms: float | None


async def _workflow(services: Services, workflow_id: str) -> Workflow:
    workflow = await run_store(lambda: services.catalog.get(workflow_id))
    if workflow is None:
        raise HTTPException(404, f"no workflow {workflow_id!r}")
    return workflow


async def _recent_events(services: Services, workflow: Workflow) -> list[EventSummary]:
    found: list[EventSummary] = []
    for event_type in workflow.trigger.events[:5]:
        items, _ = await run_store(
            lambda t=event_type: services.store.list_events(  # type: ignore[misc]
                EventFilter(type=t), limit=RECENT_EVENTS
            )
        )
        found.extend(items)
    return sorted(found, key=lambda item: item.received_at, reverse=True)[:RECENT_EVENTS]


def _sample_types(workflow: Workflow) -> tuple[list[str], list[str]]:
    """(sample types of the trigger, every other sample type)."""
    own = [t for t in workflow.trigger.events if t in SAMPLE_EVENT_TYPES]
    return own, [t for t in SAMPLE_EVENT_TYPES if t not in own]


async def _event_from_form(services: Services, form: dict[str, str]) -> dict[str, Any]:
    """The event chosen in the form: a stored one, the sample already shown, or a new sample."""
    source = form.get("source", "sample")
    if source == "stored":
        stripe_event_id = form.get("stripe_event_id", "").strip()
        if not stripe_event_id:
            raise ValueError("choose a stored event, or use a sample")
        detail = await run_store(lambda: services.store.get_event(stripe_event_id))
        if detail is None:
            raise ValueError(f"no event {stripe_event_id!r} is stored")
        if detail.pruned_reason is not None:
            raise ValueError(
                f"{stripe_event_id}: {pruned_words(detail.pruned_reason)}; use a sample"
            )
        stored: dict[str, Any] = json.loads(detail.payload)
        return stored
    given = form.get("event_json", "")
    if given:
        if len(given) > MAX_EVENT_BYTES:
            raise ValueError("the event is over 1 MiB")
        try:
            event = orjson.loads(given)  # as ingest decodes: any depth up to 1,024, no recursion
        except orjson.JSONDecodeError:
            raise ValueError("the sample event is not valid JSON: start again") from None
        if not isinstance(event, dict):
            raise ValueError("the sample event is not a JSON object: start again")
        check_event_bounds(event)
        return event
    try:
        return sample_event(form.get("sample_type", ""))
    except ValueError:
        raise ValueError("choose an event type that has a sample") from None


def _request_line(request: dict[str, Any] | None) -> str:
    if not request:
        return ""
    return f"{request.get('method', '')} {request.get('path', '')}"


async def _page(
    request: Request,
    user: User,
    workflow: Workflow,
    *,
    form: dict[str, str],
    event: dict[str, Any] | None = None,
    preview: Preview | None = None,
    results: list[SendResult] | None = None,
    error: str | None = None,
) -> HTMLResponse:
    services = services_of(request)
    own, other = _sample_types(workflow)
    return render(
        request,
        "workflow_try.html",
        user,
        active="workflows",
        workflow=workflow,
        form=form,
        own_samples=own,
        other_samples=other,
        recent=await _recent_events(services, workflow),
        event=event,
        event_json="" if event is None else json.dumps(event),
        event_pretty="" if event is None else pretty_json(event),
        preview=preview,
        results=results,
        dry_run=services.cio.dry_run,
        request_line=_request_line,
        flash=error,
        flash_kind="error",
        status_code=422 if error else 200,
    )


def build_tryit_router() -> APIRouter:
    """The "Try it" pages of a workflow."""
    router = APIRouter(include_in_schema=False)

    @router.get("/workflows/{workflow_id}/try", response_class=HTMLResponse)
    async def try_page(request: Request, workflow_id: str, user: CurrentUser) -> HTMLResponse:
        workflow = await _workflow(services_of(request), workflow_id)
        return await _page(request, user, workflow, form={})

    @router.post("/workflows/{workflow_id}/try", dependencies=CSRF)
    async def dry_run(request: Request, workflow_id: str, user: CurrentUser) -> Response:
        services = services_of(request)
        workflow = await _workflow(services, workflow_id)
        form = await read_form(request)
        form.pop("event_json", None)  # a fresh choice: a new sample, or the stored event
        try:
            event = await _event_from_form(services, form)
        except ValueError as exc:
            return await _page(request, user, workflow, form=form, error=str(exc))
        preview = await preview_workflow(services, workflow, event)
        return await _page(request, user, workflow, form=form, event=event, preview=preview)

    @router.post("/workflows/{workflow_id}/try/send", dependencies=CSRF)
    async def send(request: Request, workflow_id: str, user: CurrentUser) -> Response:
        services = services_of(request)
        workflow = await _workflow(services, workflow_id)
        form = await read_form(request)
        try:
            event = await _event_from_form(services, form)
        except ValueError as exc:
            return await _page(request, user, workflow, form=form, error=str(exc))
        preview = await preview_workflow(services, workflow, event)
        if form.get("confirm") != "yes":
            return await _page(
                request,
                user,
                workflow,
                form=form,
                event=event,
                preview=preview,
                error="Tick the box to confirm that these requests go to Customer.io for real.",
            )
        results: list[SendResult] = []
        # A test-mode event goes to the test workspace when one is configured.
        test = not event.get("livemode") and services.cio.settings.has_test_workspace
        for step in preview.steps:
            if step.planned is None:
                continue
            line = _request_line(step.request)
            try:
                answer = await services.cio.send(step.planned, mode="test" if test else "live")
            except DeliveryError as exc:
                results.append(
                    SendResult(
                        step.action_index,
                        step.action,
                        line,
                        False,
                        exc.status_code,
                        exc.response_body,
                        str(exc),
                        None,
                    )
                )
                continue
            results.append(
                SendResult(
                    step.action_index,
                    step.action,
                    line,
                    True,
                    answer.status_code,
                    answer.body,
                    None,
                    answer.duration_ms,
                )
            )
        return await _page(
            request, user, workflow, form=form, event=event, preview=preview, results=results
        )

    return router


__all__ = ["SendResult", "build_tryit_router"]
