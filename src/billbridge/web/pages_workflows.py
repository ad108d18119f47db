"""The Workflows pages: the list with on/off switches, templates, the editor, delete.

    GET  /workflows                     list; POST /workflows/{id}/toggle flips on/off
    GET  /workflows/new[?template=ID]   choose a template (or scratch), then the editor
    POST /workflows/new                 editor steps and Save (creates)
    GET  /workflows/{id}, POST          the editor of an existing workflow (Save replaces)
    POST /workflows/{id}/delete

The editor is a plain form: buttons other than Save (add an action, add a row...) post
the form back and get it re-rendered with the change, so it works without JavaScript.
Saving goes through `WorkflowCatalog.save` like the JSON API; `WorkflowValidationError`
problems are shown at their fields.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from billbridge.errors import WorkflowValidationError
from billbridge.services import Services
from billbridge.stripe.samples import SAMPLE_EVENT_TYPES
from billbridge.web.auth import User
from billbridge.web.pages_common import (
    CSRF,
    CurrentUser,
    read_form,
    render,
    run_store,
    services_of,
)
from billbridge.web.pages_endpoint import endpoint_context, workflows_changed
from billbridge.web.sample_fields import fields_for
from billbridge.web.workflow_form import (
    LATE_EVENTS_CHOICES,
    TRIGGER_MODES,
    EditorState,
    action_specs,
)
from billbridge.workflows.defaults import default_workflows
from billbridge.workflows.event_types import event_type_catalog
from billbridge.workflows.model import Workflow, is_valid_workflow_id, validate_workflow

SCRATCH = "scratch"
_SYNCED = "&endpoint=synced"  # the Stripe endpoint was synced automatically after a change


def _shows_endpoint(request: Request, *names: str) -> bool:
    """Whether a page shows the Stripe endpoint's state: after a change or a sync."""
    return any(request.query_params.get(name) for name in (*names, "endpoint"))


def anchors(state: EditorState) -> dict[str, str]:
    """Element ids of the editor's fields by problem path, for the error summary's links."""
    found = {
        "id": "f-id",
        "name": "f-name",
        "description": "f-description",
        "filter": "f-filter",
        "trigger": "f-trigger-events-0",
        "trigger.events": "f-trigger-events-0",
        "trigger.mode": "f-trigger-mode",
        "late_events": "f-late-events",
        "actions": "actions-heading",
    }
    for index in range(len(state.events)):
        found[f"trigger.events.{index}"] = f"f-trigger-events-{index}"
    for index, action in enumerate(state.actions):
        found[f"actions.{index}"] = f"action-{index}"
        found[f"actions.{index}.type"] = f"f-actions-{index}-type"
        spec = action.spec
        for field_spec in spec.fields if spec else ():
            base = f"actions.{index}.{field_spec.name}"
            found[base] = f"f-actions-{index}-{field_spec.name}"
            for row_index, row in enumerate(action.mappings.get(field_spec.name, [])):
                found[f"{base}.{row.key.strip()}"] = (
                    f"f-actions-{index}-{field_spec.name}-value-{row_index}"
                )
    return found


def _anchor(path: str, known: dict[str, str]) -> str | None:
    while path:
        if path in known:
            return known[path]
        path = path.rpartition(".")[0]
    return None


def _unique_id(base: str, taken: set[str]) -> str:
    if base not in taken:
        return base
    number = 2
    while f"{base}-{number}"[:64] in taken:
        number += 1
    return f"{base}-{number}"[:64]


def _template_state(template: str, taken: set[str]) -> EditorState | None:
    if template == SCRATCH:
        return EditorState(actions=[])
    for workflow in default_workflows():
        if workflow.id == template:
            state = EditorState.from_data(workflow.to_data())
            state.id = _unique_id(workflow.id, taken)
            state.enabled = True
            return state
    return None


def editor_page(
    request: Request,
    user: User,
    state: EditorState,
    *,
    is_new: bool,
    problems: dict[str, str] | None = None,
    flash: str | None = None,
    flash_kind: str = "ok",
    status_code: int = 200,
    context: dict[str, Any] | None = None,
) -> HTMLResponse:
    """The editor, with every problem at its field and in a summary; `context` adds to the
    template's (the Stripe endpoint's state after a save)."""
    problems = problems or {}
    known = anchors(state)
    sample = fields_for(state.events)
    title = "New workflow" if is_new else f"Edit “{state.name or state.id}”"
    return render(
        request,
        "workflow_edit.html",
        user,
        active="workflows",
        page_title=title,
        state=state,
        is_new=is_new,
        action=("/workflows/new" if is_new else f"/workflows/{quote(state.id)}"),
        errors=problems,
        summary=[(path, message, _anchor(path, known)) for path, message in problems.items()],
        specs=action_specs(),
        modes=TRIGGER_MODES,
        late_events_choices=LATE_EVENTS_CHOICES,
        event_types=event_type_catalog(),
        sample=sample,
        has_sample=set(SAMPLE_EVENT_TYPES),
        flash=None if problems else flash,
        flash_kind="error" if problems else flash_kind,
        status_code=status_code,
        **(context or {}),
    )


async def _workflows(services: Services) -> list[Workflow]:
    return await run_store(services.catalog.all)


async def _save(request: Request, user: User, state: EditorState, *, is_new: bool) -> Response:
    services = services_of(request)
    data, problems = state.to_data()
    try:
        validate_workflow(data)
    except WorkflowValidationError as exc:
        problems = {**exc.problems, **problems}
    if (
        not problems
        and is_new
        and await run_store(lambda: services.store.get_workflow(state.id)) is not None
    ):
        problems["id"] = f"a workflow with id {state.id!r} exists: choose another id"
    if problems:
        return editor_page(request, user, state, is_new=is_new, problems=problems, status_code=422)
    try:
        saved = await run_store(lambda: services.catalog.save(data))
    except WorkflowValidationError as exc:
        return editor_page(
            request, user, state, is_new=is_new, problems=exc.problems, status_code=422
        )
    services.catalog.invalidate()
    synced = await workflows_changed(request)
    return RedirectResponse(
        f"/workflows/{quote(saved.id)}?saved=1{_SYNCED if synced else ''}", status_code=303
    )


async def _editor_post(request: Request, user: User, *, existing: str | None) -> Response:
    form = await read_form(request)
    state = EditorState.from_form(form)
    if existing is not None:
        state.id = existing
    op = form.get("op", "save")
    if op == "save":
        return await _save(request, user, state, is_new=existing is None)
    state.apply(op, form.get("new_action_type", ""))
    return editor_page(request, user, state, is_new=existing is None)


def build_workflows_router() -> APIRouter:
    """The `/workflows` pages (but "Try it", see pages_tryit.py)."""
    router = APIRouter(include_in_schema=False)

    @router.get("/workflows", response_class=HTMLResponse)
    async def workflows_page(request: Request, user: CurrentUser) -> HTMLResponse:
        workflows = await _workflows(services_of(request))
        changed = request.query_params.get("changed")
        deleted = request.query_params.get("deleted")
        flash = None
        if changed:
            state = next((w for w in workflows if w.id == changed), None)
            if state is not None:
                flash = f"“{state.name}” is now {'on' if state.enabled else 'off'}."
        elif deleted:
            flash = f"Workflow {deleted!r} was deleted."
        return render(
            request,
            "workflows.html",
            user,
            active="workflows",
            workflows=workflows,
            specs=action_specs(),
            flash=flash,
            flash_kind="ok",
            **(
                await endpoint_context(request, "/workflows")
                if _shows_endpoint(request, "changed", "deleted")
                else {}
            ),
        )

    @router.post("/workflows/{workflow_id}/toggle", dependencies=CSRF)
    async def toggle(request: Request, workflow_id: str, user: CurrentUser) -> Response:
        services = services_of(request)
        workflow = await run_store(lambda: services.catalog.get(workflow_id))
        if workflow is None:
            raise HTTPException(404, f"no workflow {workflow_id!r}")
        data: dict[str, Any] = {**workflow.to_data(), "enabled": not workflow.enabled}
        await run_store(lambda: services.catalog.save(data))
        services.catalog.invalidate()
        synced = await workflows_changed(request)
        return RedirectResponse(
            f"/workflows?changed={quote(workflow_id)}{_SYNCED if synced else ''}"
            f"#wf-{quote(workflow_id)}",
            status_code=303,
        )

    @router.get("/workflows/new", response_class=HTMLResponse)
    async def new_workflow(
        request: Request, user: CurrentUser, template: str | None = None
    ) -> HTMLResponse:
        if template:
            taken = {workflow.id for workflow in await _workflows(services_of(request))}
            state = _template_state(template, taken)
            if state is None:
                raise HTTPException(404, f"no template {template!r}")
            return editor_page(request, user, state, is_new=True)
        return render(
            request,
            "workflow_new.html",
            user,
            active="workflows",
            templates_=default_workflows(),
            specs=action_specs(),
            catalog={info.name: info for info in event_type_catalog()},
        )

    @router.post("/workflows/new", dependencies=CSRF)
    async def create(request: Request, user: CurrentUser) -> Response:
        return await _editor_post(request, user, existing=None)

    @router.get("/workflows/{workflow_id}", response_class=HTMLResponse)
    async def edit(request: Request, workflow_id: str, user: CurrentUser) -> HTMLResponse:
        workflow = await run_store(lambda: services_of(request).catalog.get(workflow_id))
        if workflow is None:
            raise HTTPException(404, f"no workflow {workflow_id!r}")
        saved = request.query_params.get("saved") == "1"
        return editor_page(
            request,
            user,
            EditorState.from_data(workflow.to_data()),
            is_new=False,
            flash="Saved. It applies to events received from now on." if saved else None,
            context=(
                await endpoint_context(request, f"/workflows/{quote(workflow_id)}")
                if _shows_endpoint(request, "saved")
                else None
            ),
        )

    @router.post("/workflows/{workflow_id}", dependencies=CSRF)
    async def update(request: Request, workflow_id: str, user: CurrentUser) -> Response:
        if not is_valid_workflow_id(workflow_id):
            raise HTTPException(404, f"no workflow {workflow_id!r}")
        exists = await run_store(lambda: services_of(request).store.get_workflow(workflow_id))
        if exists is None:
            raise HTTPException(404, f"no workflow {workflow_id!r}")
        return await _editor_post(request, user, existing=workflow_id)

    @router.post("/workflows/{workflow_id}/delete", dependencies=CSRF)
    async def delete(request: Request, workflow_id: str, user: CurrentUser) -> Response:
        catalog = services_of(request).catalog
        deleted = await run_store(lambda: catalog.delete(workflow_id))
        catalog.invalidate()
        if not deleted:
            raise HTTPException(404, f"no workflow {workflow_id!r}")
        synced = await workflows_changed(request)
        return RedirectResponse(
            f"/workflows?deleted={quote(workflow_id)}{_SYNCED if synced else ''}", status_code=303
        )

    return router
