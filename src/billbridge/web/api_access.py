"""The JSON API for settings: `/api/connections`, `/api/alerts`, `/api/tokens`.

    app.include_router(build_access_api_router())

Authentication is enforced for all of `/api/*` by `auth.ApiGuard`; the dependency here
only documents it in the OpenAPI schema. Responses never carry a whole credential, alert
URL or token, except a new token, once, in the answer that creates it.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Body, Depends, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from billbridge.accounts import create_api_token
from billbridge.credentials import CredentialsError
from billbridge.errors import ConfigurationError
from billbridge.store.records_access import ApiTokenRecord
from billbridge.web.auth import require_api_auth
from billbridge.web.settings_ops import (
    alerts_public,
    alerts_view,
    connection_name,
    connections_view,
    send_test_alert,
    services_of,
    test_connection,
    update_alerts,
)

MAX_ROW_ID = 2**63 - 1  # a larger id cannot be a row: 422, not a database overflow


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=255, description="Who or what uses the token")


class TokenOut(BaseModel):
    id: int
    name: str
    prefix: str = Field(description="The token's first characters, to recognise it")
    created_at: float
    last_used_at: float | None
    revoked_at: float | None

    @classmethod
    def from_record(cls, record: ApiTokenRecord) -> TokenOut:
        return cls(
            id=record.token_id,
            name=record.name,
            prefix=record.prefix,
            created_at=record.created_at,
            last_used_at=record.last_used_at,
            revoked_at=record.revoked_at,
        )


class NewTokenOut(TokenOut):
    token: str = Field(description="The token itself: shown only in this answer")


def _invalid(problems: dict[str, str]) -> JSONResponse:
    return JSONResponse({"detail": "invalid settings", "errors": problems}, status_code=422)


def build_access_api_router() -> APIRouter:
    """Connections, alerts and tokens under `/api`."""
    router = APIRouter(prefix="/api", dependencies=[Depends(require_api_auth)])
    _add_connection_routes(router)
    _add_alert_routes(router)
    _add_token_routes(router)
    return router


_UNKNOWN_CONNECTION = "no such connection: use stripe, customerio or customerio_test"


def _add_connection_routes(router: APIRouter) -> None:
    @router.get("/connections", tags=["settings"], summary="Stripe and Customer.io credentials")
    async def get_connections(request: Request) -> dict[str, Any]:
        return await connections_view(services_of(request))

    @router.put(
        "/connections/{name}",
        tags=["settings"],
        summary="Save credentials (encrypted); a field set in the environment is read-only",
    )
    async def put_connection(
        request: Request,
        name: str,
        values: Annotated[
            dict[str, str | None],
            Body(description='Fields to change; null keeps, "" removes the saved value'),
        ],
    ) -> Any:
        connection = connection_name(name)
        if connection is None:
            raise HTTPException(404, _UNKNOWN_CONNECTION)
        services = services_of(request)
        try:
            await anyio.to_thread.run_sync(lambda: services.credentials.save(connection, values))
        except CredentialsError as exc:
            return _invalid(exc.problems)
        return await connections_view(services)

    @router.post(
        "/connections/{name}/test",
        tags=["settings"],
        summary="Test the connection (Customer.io: detects the region; Stripe: a cheap read)",
    )
    async def post_connection_test(request: Request, name: str) -> dict[str, Any]:
        connection = connection_name(name)
        if connection is None:
            raise HTTPException(404, _UNKNOWN_CONNECTION)
        return await test_connection(services_of(request), connection)


def _add_alert_routes(router: APIRouter) -> None:
    @router.get("/alerts", tags=["settings"], summary="Alert channels (URLs masked)")
    async def get_alerts(request: Request) -> dict[str, Any]:
        return await alerts_view(services_of(request))

    @router.put("/alerts", tags=["settings"], summary="Change alert channels and grouping")
    async def put_alerts(
        request: Request,
        changes: Annotated[
            dict[str, Any],
            Body(description='Settings to change; a URL that is null keeps, "" removes it'),
        ],
    ) -> Any:
        config, problems = await update_alerts(request, services_of(request), changes)
        if config is None:
            return _invalid(problems)
        return alerts_public(config)

    @router.post("/alerts/test", tags=["settings"], summary="Send a test alert to every channel")
    async def post_alerts_test(request: Request) -> dict[str, Any]:
        return await send_test_alert(services_of(request))


def _add_token_routes(router: APIRouter) -> None:
    @router.get("/tokens", tags=["settings"], summary="API tokens (never the tokens)")
    async def get_tokens(request: Request) -> list[TokenOut]:
        store = services_of(request).store
        records = await anyio.to_thread.run_sync(store.list_api_tokens)
        return [TokenOut.from_record(record) for record in records]

    @router.post("/tokens", tags=["settings"], summary="Create an API token", status_code=201)
    async def post_token(request: Request, body: TokenIn) -> NewTokenOut:
        store = services_of(request).store
        try:
            token, record = await anyio.to_thread.run_sync(
                lambda: create_api_token(store, body.name)
            )
        except ConfigurationError as exc:
            raise HTTPException(422, str(exc)) from None
        return NewTokenOut(token=token, **TokenOut.from_record(record).model_dump())

    @router.delete("/tokens/{token_id}", tags=["settings"], summary="Revoke an API token")
    async def delete_token(
        request: Request,
        token_id: Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="from GET /api/tokens")],
    ) -> dict[str, Any]:
        store = services_of(request).store
        revoked = await anyio.to_thread.run_sync(lambda: store.revoke_api_token(token_id))
        if not revoked:
            raise HTTPException(404, "no active token with that id")
        return {"revoked": token_id}
