"""The JSON API for erasure: `POST /api/customers/{customer_id}/erase`, `GET /api/erasures`.

    app.include_router(build_privacy_api_router())

Authentication as for all of `/api/*` (a Bearer token, or a session with the CSRF header
for a POST). The answer says what was erased in counts, never the data.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict

from billbridge.composition import build_eraser
from billbridge.erasure import ErasureReport
from billbridge.errors import ErasureRequestError, StoreUnavailableError
from billbridge.services import Services
from billbridge.store.records_privacy import ErasureRecord
from billbridge.web.auth import Principal, require_api_auth
from billbridge.web.schemas import ErrorOut


class ErasureOut(BaseModel):
    """What an erasure removed, and the Customer.io action it queued."""

    model_config = ConfigDict(frozen=True)

    matched_by: str
    customers: int
    events: int
    cio_action: str
    cio_event_ids: list[str]

    @classmethod
    def from_report(cls, report: ErasureReport) -> ErasureOut:
        return cls(
            matched_by=report.matched_by,
            customers=report.customers,
            events=report.events,
            cio_action=report.cio_action,
            cio_event_ids=list(report.cio_event_ids),
        )


class ErasureRecordOut(BaseModel):
    """One recorded erasure: a hash of what was asked, counts, who, and the action's state."""

    model_config = ConfigDict(frozen=True)

    id: int
    created_at: float
    matched_by: str
    matched_hash: str
    customers: int
    events: int
    requested_by: str
    cio_action: str
    cio_event_ids: list[str]
    cio_statuses: list[str]

    @classmethod
    def from_record(cls, record: ErasureRecord) -> ErasureRecordOut:
        return cls(
            id=record.erasure_id,
            created_at=record.created_at,
            matched_by=record.matched_by,
            matched_hash=record.matched_hash,
            customers=record.customers,
            events=record.events,
            requested_by=record.requested_by,
            cio_action=record.cio_action,
            cio_event_ids=list(record.cio_event_ids),
            cio_statuses=list(record.cio_statuses),
        )


BAD_REQUEST: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "Neither a customer id (cus_...) nor an email"}
}


def requester(principal: Principal) -> str:
    """Who an erasure record names: the user, or the API token's name."""
    return f"token:{principal.name}" if principal.kind != "session" else principal.name


def build_privacy_api_router() -> APIRouter:
    """The erasure routes under `/api`."""
    router = APIRouter(prefix="/api", dependencies=[Depends(require_api_auth)])

    @router.post(
        "/customers/{customer_id}/erase",
        tags=["privacy"],
        summary="Erase a person's personal data (a GDPR erasure request)",
        description=(
            "Removes the person's personal data from every table (event payloads become "
            "stubs, attempt bodies are cleared, the customer and billing rows are deleted), "
            "records the erasure as a hash and counts, and queues the Customer.io action "
            "of BILLBRIDGE_ERASURE_CIO_ACTION (delete, suppress, none) as a delivery. "
            "`customer_id` is a Stripe customer id, or an email address for a person "
            "known only by email."
        ),
        response_model=ErasureOut,
        responses=BAD_REQUEST,
    )
    async def erase_customer(
        request: Request,
        # A customer id (cus_...) or an email address; anything else is a 422.
        customer_id: Annotated[str, Path(min_length=1, max_length=320, pattern=r"^\s*cus_|@")],
        principal: Annotated[Principal, Depends(require_api_auth)],
    ) -> ErasureOut:
        services: Services = request.app.state.services
        eraser = build_eraser(services)
        by_email = "@" in customer_id
        try:
            report = await anyio.to_thread.run_sync(
                lambda: eraser.erase(
                    customer_id=None if by_email else customer_id,
                    email=customer_id if by_email else None,
                    requested_by=requester(principal),
                )
            )
        except ErasureRequestError as exc:
            raise HTTPException(400, str(exc)) from None
        except StoreUnavailableError as exc:
            raise HTTPException(503, str(exc)) from None
        return ErasureOut.from_report(report)

    @router.get(
        "/erasures",
        tags=["privacy"],
        summary="The recorded erasures, newest first",
        response_model=list[ErasureRecordOut],
    )
    async def list_erasures(
        request: Request, limit: Annotated[int, Query(ge=1, le=500)] = 50
    ) -> list[ErasureRecordOut]:
        services: Services = request.app.state.services
        try:
            records = await anyio.to_thread.run_sync(lambda: services.store.list_erasures(limit))
        except StoreUnavailableError as exc:
            raise HTTPException(503, str(exc)) from None
        return [ErasureRecordOut.from_record(record) for record in records]

    return router
