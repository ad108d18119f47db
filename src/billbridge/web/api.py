"""The JSON API under `/api/`: events, replays, workflows (SPEC §3) and the live workers.

    app.include_router(build_api_router())   # handlers use request.app.state.services

Every store call runs in a worker thread (the store is synchronous). Nothing returned
here holds a credential: request summaries come from `CioRequest.summary()`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse

from billbridge.delivery.worker import KNOWN_WITHIN, split_workers
from billbridge.errors import EventPrunedError, StoreUnavailableError, WorkflowValidationError
from billbridge.services import Services
from billbridge.store.personal import pruned_words
from billbridge.store.records import EventFilter, EventStatus
from billbridge.stripe.events import check_event_bounds
from billbridge.stripe.samples import SAMPLE_EVENT_TYPES, sample_event
from billbridge.web.auth import require_api_auth
from billbridge.web.operations import parse_duration, replay_event_report, replay_failed_report
from billbridge.web.preview import preview_workflow
from billbridge.web.schemas import (
    ErrorOut,
    EventListOut,
    EventOut,
    EventSummaryOut,
    HeldBackOut,
    PersonOut,
    PlannedRequestOut,
    PrunedOut,
    ReplayFailedOut,
    ReplayOut,
    TestEventOut,
    ValidationErrorOut,
    WorkerListOut,
    WorkerOut,
    WorkflowListOut,
    WorkflowTestIn,
    WorkflowTestOut,
)
from billbridge.workflows.model import Workflow, validate_workflow

T = TypeVar("T")

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such event or workflow"}
}
PRUNED: dict[int | str, dict[str, Any]] = {
    409: {
        "model": PrunedOut,
        "description": "The event's payload was removed (retention or erasure): no replay",
    }
}
INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ValidationErrorOut, "description": "The workflow is invalid"}
}
WorkflowBody = Annotated[
    dict[str, Any],
    Body(description="A workflow definition (the format of docs/internals.md)"),
]


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def _run(fn: Callable[[], T]) -> T:
    """Run a blocking store call in a thread; an unreachable database answers 503."""
    try:
        return await anyio.to_thread.run_sync(fn)
    except StoreUnavailableError as exc:
        raise HTTPException(503, str(exc)) from None


def _invalid(problems: dict[str, str]) -> JSONResponse:
    return JSONResponse({"detail": "invalid workflow", "errors": problems}, status_code=422)


def _workflow_data(workflow: Workflow) -> dict[str, Any]:
    data = workflow.to_data()
    data.setdefault("late_events", workflow.late_events)  # exports omit the default
    return data


def build_api_router() -> APIRouter:
    """The `/api` routes; services are read from `request.app.state.services`."""
    router = APIRouter(prefix="/api", dependencies=[Depends(require_api_auth)])
    _add_event_routes(router)
    _add_workflow_routes(router)
    _add_worker_routes(router)
    return router


def _add_worker_routes(router: APIRouter) -> None:
    @router.get(
        "/workers",
        tags=["workers"],
        summary="The workers of the fleet, by their heartbeats",
        response_model=WorkerListOut,
    )
    async def list_workers(request: Request) -> WorkerListOut:
        store = _services(request).store
        alive, silent = split_workers(await _run(lambda: store.list_workers(KNOWN_WITHIN)))
        return WorkerListOut(
            alive=len(alive),
            workers=[
                *(WorkerOut.from_record(w, alive=True) for w in alive),
                *(WorkerOut.from_record(w, alive=False) for w in silent),
            ],
        )


# Events ---------------------------------------------------------------------------------


def _add_event_routes(router: APIRouter) -> None:
    @router.get(
        "/events",
        tags=["events"],
        summary="List stored events, newest first",
        response_model=EventListOut,
        responses={400: {"model": ErrorOut, "description": "Bad cursor"}},
    )
    async def list_events(
        request: Request,
        *,
        type: Annotated[str | None, Query(description="a Stripe event type")] = None,
        status: Annotated[EventStatus | None, Query(description="event status")] = None,
        customer: Annotated[str | None, Query(description="a customer id or email")] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(description="next_cursor of a page")] = None,
    ) -> EventListOut:
        store = _services(request).store
        event_filter = EventFilter(type=type or None, status=status, customer=customer or None)
        try:
            items, next_cursor = await _run(
                lambda: store.list_events(event_filter, limit=limit, cursor=cursor or None)
            )
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        return EventListOut(
            items=[EventSummaryOut.from_record(item) for item in items], next_cursor=next_cursor
        )

    @router.get(
        "/events/{stripe_event_id}",
        tags=["events"],
        summary="One event with its deliveries and their attempts",
        response_model=EventOut,
        responses=NOT_FOUND,
    )
    async def get_event(request: Request, stripe_event_id: str) -> EventOut:
        store = _services(request).store
        detail = await _run(lambda: store.get_event(stripe_event_id))
        if detail is None:
            raise HTTPException(404, f"no event {stripe_event_id!r} is stored")
        return EventOut.from_detail(detail)

    @router.post(
        "/events/{stripe_event_id}/replay",
        tags=["events"],
        summary="A new attempt for each delivery of the event",
        description=(
            "Succeeded deliveries are replayed too (deterministic Customer.io event ids keep "
            "the effect single). A transactional email or broadcast that already succeeded, "
            "or whose send ended with an unknown outcome (timed out after the request went "
            "out), is replayed only with `force=true`; otherwise it is listed in `held_back` "
            "with the reason (and in `skipped_sent` when it succeeded)."
        ),
        response_model=ReplayOut,
        responses={**NOT_FOUND, **PRUNED},
    )
    async def replay_event(
        request: Request, stripe_event_id: str, force: bool = False
    ) -> ReplayOut | JSONResponse:
        services = _services(request)
        window = services.settings.retry_window
        try:
            report = await _run(
                lambda: replay_event_report(
                    services.store, stripe_event_id, force=force, retry_window=window
                )
            )
        except KeyError:
            raise HTTPException(404, f"no event {stripe_event_id!r} is stored") from None
        except EventPrunedError as exc:
            return JSONResponse({"detail": str(exc), "reason": exc.reason}, status_code=409)
        return ReplayOut(
            stripe_event_id=report.stripe_event_id,
            replayed=report.replayed,
            skipped_sent=report.skipped_sent,
            held_back=[HeldBackOut.from_record(held) for held in report.held_back],
        )

    @router.post(
        "/replay-failed",
        tags=["events"],
        summary="A new attempt for every failed delivery",
        description=(
            "Never forced: a failed transactional email or broadcast that was or may have been "
            "sent (an earlier success, or an unknown outcome) stays failed and is listed in "
            "`held_back`; replay its event with `force=true` to send it again."
        ),
        response_model=ReplayFailedOut,
        responses={400: {"model": ErrorOut, "description": "Bad duration"}},
    )
    async def replay_failed(
        request: Request,
        since: Annotated[
            str | None, Query(description="only events received within, e.g. 30m, 2h, 1d")
        ] = None,
        type: Annotated[str | None, Query(description="only this event type")] = None,
    ) -> ReplayFailedOut:
        services = _services(request)
        try:
            since_seconds = None if not since else parse_duration(since)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        window = services.settings.retry_window
        report = await _run(
            lambda: replay_failed_report(
                services.store,
                since_seconds=since_seconds,
                event_type=type or None,
                retry_window=window,
            )
        )
        return ReplayFailedOut(
            replayed=report.replayed,
            held_back=[HeldBackOut.from_record(held) for held in report.held_back],
        )


# Workflows ------------------------------------------------------------------------------


def _add_workflow_routes(router: APIRouter) -> None:
    @router.get(
        "/workflows",
        tags=["workflows"],
        summary="Every workflow",
        response_model=WorkflowListOut,
    )
    async def list_workflows(request: Request) -> WorkflowListOut:
        catalog = _services(request).catalog
        workflows = await _run(catalog.all)
        return WorkflowListOut(items=[_workflow_data(workflow) for workflow in workflows])

    @router.get(
        "/workflows/{workflow_id}",
        tags=["workflows"],
        summary="One workflow",
        response_model=Workflow,
        response_model_exclude_none=True,
        responses=NOT_FOUND,
    )
    async def get_workflow(request: Request, workflow_id: str) -> dict[str, Any]:
        catalog = _services(request).catalog
        workflow = await _run(lambda: catalog.get(workflow_id))
        if workflow is None:
            raise HTTPException(404, f"no workflow {workflow_id!r}")
        return _workflow_data(workflow)

    @router.post(
        "/workflows",
        tags=["workflows"],
        summary="Create a workflow",
        status_code=201,
        response_model=Workflow,
        response_model_exclude_none=True,
        responses={
            **INVALID,
            409: {"model": ErrorOut, "description": "A workflow with this id exists"},
        },
    )
    async def create_workflow(request: Request, body: WorkflowBody) -> Any:
        services = _services(request)
        try:
            workflow = validate_workflow(body)
        except WorkflowValidationError as exc:
            return _invalid(exc.problems)
        if await _run(lambda: services.store.get_workflow(workflow.id)) is not None:
            raise HTTPException(409, f"a workflow with id {workflow.id!r} exists; use PUT")
        saved = await _save(services, workflow.to_data())
        return saved if isinstance(saved, JSONResponse) else _workflow_data(saved)

    @router.put(
        "/workflows/{workflow_id}",
        tags=["workflows"],
        summary="Replace a workflow",
        response_model=Workflow,
        response_model_exclude_none=True,
        responses={**NOT_FOUND, **INVALID},
    )
    async def replace_workflow(request: Request, workflow_id: str, body: WorkflowBody) -> Any:
        services = _services(request)
        given = body.get("id", workflow_id)
        if given != workflow_id:
            return _invalid({"id": f"must be {workflow_id!r} (the id in the URL) or absent"})
        if await _run(lambda: services.store.get_workflow(workflow_id)) is None:
            raise HTTPException(404, f"no workflow {workflow_id!r}; create it with POST")
        saved = await _save(services, {**body, "id": workflow_id})
        return saved if isinstance(saved, JSONResponse) else _workflow_data(saved)

    @router.delete(
        "/workflows/{workflow_id}",
        tags=["workflows"],
        summary="Delete a workflow",
        status_code=204,
        response_class=Response,
        responses=NOT_FOUND,
    )
    async def delete_workflow(request: Request, workflow_id: str) -> Response:
        services = _services(request)
        catalog = services.catalog
        deleted = await _run(lambda: catalog.delete(workflow_id))
        catalog.invalidate()
        if not deleted:
            raise HTTPException(404, f"no workflow {workflow_id!r}")
        await _run(services.stripe_endpoint.workflows_changed_quietly)
        return Response(status_code=204)

    @router.post(
        "/workflows/{workflow_id}/test",
        tags=["workflows"],
        summary="Dry-run a workflow on a sample, stored or given event",
        description=(
            "Returns the exact Customer.io requests the workflow's actions would make. "
            "Nothing is sent and nothing is stored."
        ),
        response_model=WorkflowTestOut,
        responses={
            **NOT_FOUND,
            422: {"model": ErrorOut, "description": "No usable event"},
        },
    )
    async def test_workflow(
        request: Request, workflow_id: str, body: WorkflowTestIn | None = None
    ) -> WorkflowTestOut:
        services = _services(request)
        workflow = await _run(lambda: services.catalog.get(workflow_id))
        if workflow is None:
            raise HTTPException(404, f"no workflow {workflow_id!r}")
        event = await _test_event(services, workflow, body or WorkflowTestIn())
        preview = await preview_workflow(services, workflow, event)
        person = preview.person
        return WorkflowTestOut(
            event=TestEventOut(id=_text(event.get("id")), type=_text(event.get("type"))),
            person=None
            if person is None
            else PersonOut(
                identifier=person.identifier, customer_id=person.customer_id, email=person.email
            ),
            requests=[PlannedRequestOut(**step.summary()) for step in preview.steps],
        )


async def _save(services: Services, data: dict[str, Any]) -> Workflow | JSONResponse:
    catalog = services.catalog
    try:
        workflow = await _run(lambda: catalog.save(data))
    except WorkflowValidationError as exc:
        return _invalid(exc.problems)
    catalog.invalidate()
    await _run(services.stripe_endpoint.workflows_changed_quietly)
    return workflow


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


async def _test_event(
    services: Services, workflow: Workflow, body: WorkflowTestIn
) -> dict[str, Any]:
    """The event a test runs on: a raw event, a stored one, or a sample (default)."""
    given = [name for name in ("event_type", "stripe_event_id", "event") if getattr(body, name)]
    if len(given) > 1:
        raise HTTPException(422, "give at most one of event_type, stripe_event_id and event")
    if body.event is not None:
        try:
            check_event_bounds(body.event)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return body.event
    if body.stripe_event_id:
        stripe_event_id = body.stripe_event_id
        detail = await _run(lambda: services.store.get_event(stripe_event_id))
        if detail is None:
            raise HTTPException(404, f"no event {stripe_event_id!r} is stored")
        if detail.pruned_reason is not None:
            words = pruned_words(detail.pruned_reason)
            raise HTTPException(409, f"{stripe_event_id}: {words}; test on a sample or `event`")
        stored: dict[str, Any] = json.loads(detail.payload)
        return stored
    event_type = body.event_type or workflow.trigger.events[0]
    try:
        return sample_event(event_type)
    except ValueError:
        raise HTTPException(
            422,
            f"no sample for {event_type!r}: pass `event` or `stripe_event_id`; samples exist "
            "for " + ", ".join(SAMPLE_EVENT_TYPES),
        ) from None
