"""The erasure page: a customer's events page links here; a confirmation, then the erasure.

    GET  /customers/{customer_id}/erase     what is held about the person, and a form
    POST /customers/{customer_id}/erase     erase (CSRF), then what was done

`customer_id` is a Stripe customer id, or an email address for a person known by email.
The same `Eraser` as the CLI and `POST /api/customers/{customer_id}/erase`.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse

from billbridge.composition import build_eraser
from billbridge.errors import ErasureRequestError
from billbridge.web.pages_common import CSRF, CurrentUser, render, run_store, services_of


def _who(person: str) -> dict[str, str | None]:
    by_email = "@" in person
    return {"customer_id": None if by_email else person, "email": person if by_email else None}


def build_privacy_router() -> APIRouter:
    """The `/customers/{id}/erase` pages."""
    router = APIRouter(include_in_schema=False)

    @router.get("/customers/{customer_id}/erase", response_class=HTMLResponse)
    async def erase_page(request: Request, customer_id: str, user: CurrentUser) -> HTMLResponse:
        services = services_of(request)
        eraser = build_eraser(services)
        try:
            found = await run_store(lambda: eraser.find(**_who(customer_id)))
        except ErasureRequestError as exc:
            raise HTTPException(400, str(exc)) from None
        return render(
            request,
            "erase.html",
            user,
            active="events",
            person=customer_id,
            found=found,
            action=services.settings.erasure_cio_action,
            report=None,
        )

    @router.post("/customers/{customer_id}/erase", dependencies=CSRF, response_class=HTMLResponse)
    async def erase(request: Request, customer_id: str, user: CurrentUser) -> HTMLResponse:
        eraser = build_eraser(services_of(request))
        try:
            report = await run_store(
                lambda: eraser.erase(**_who(customer_id), requested_by=user.username)
            )
        except ErasureRequestError as exc:
            raise HTTPException(400, str(exc)) from None
        return render(
            request,
            "erase.html",
            user,
            active="events",
            person=customer_id,
            report=report,
            flash="The person's personal data was erased.",
            flash_kind="ok",
        )

    return router
