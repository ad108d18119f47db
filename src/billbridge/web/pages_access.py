"""Server-rendered pages for access and settings: login, logout, connections, alerts, tokens.

    app.include_router(build_access_pages_router())

Every POST carries the CSRF token (`verify_csrf`); every page but the login page needs a
session (`require_user`). A POST answers with the page itself and a notice.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from billbridge.accounts import authenticate, create_api_token
from billbridge.config import Settings
from billbridge.credentials import CONNECTIONS, CredentialsError, fields_of
from billbridge.errors import ConfigurationError
from billbridge.web.api_access import build_access_api_router
from billbridge.web.auth import (
    AuthState,
    User,
    current_user,
    end_session,
    install_auth,
    install_trusted_proxies,
    require_user,
    start_session,
    verify_csrf,
)
from billbridge.web.settings_ops import (
    alerts_view,
    connection_name,
    connections_view,
    send_test_alert,
    services_of,
    test_connection,
    update_alerts,
)
from billbridge.web.templating import templates

CurrentUser = Annotated[User, Depends(require_user)]
CSRF = [Depends(verify_csrf)]


def safe_next(value: str | None) -> str:
    """Only a local path: never `//host` or a scheme (no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}


def build_access_pages_router() -> APIRouter:
    """The login/logout routes and the settings pages."""
    router = APIRouter(include_in_schema=False)
    _add_login_routes(router)
    _add_connection_pages(router)
    _add_alert_pages(router)
    _add_token_pages(router)
    return router


# Login ----------------------------------------------------------------------------------


def _login_page(
    request: Request, *, next_path: str, error: str | None = None, status_code: int = 200
) -> Response:
    return templates.TemplateResponse(
        request,
        "login.html",
        {"next": next_path, "flash": error, "flash_kind": "error", "user": None},
        status_code=status_code,
    )


def _add_login_routes(router: APIRouter) -> None:
    @router.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request, next: str | None = None) -> Response:
        if await current_user(request) is not None:
            return RedirectResponse(safe_next(next), status_code=303)
        return _login_page(request, next_path=safe_next(next))

    @router.post("/login", dependencies=CSRF)
    async def login(request: Request) -> Response:
        form = await _form(request)
        username = form.get("username", "").strip()
        password = form.get("password", "")
        next_path = safe_next(form.get("next"))
        auth: AuthState = request.app.state.auth
        ip = _client_ip(request)
        store = services_of(request).store
        wait = await anyio.to_thread.run_sync(lambda: auth.throttle.begin(store, ip, username))
        if wait > 0:
            seconds = math.ceil(wait)
            message = (
                "Too many failed logins for this account or from your address. "
                f"Try again in {seconds} second{'s' if seconds != 1 else ''}."
            )
            page = _login_page(request, next_path=next_path, error=message, status_code=429)
            page.headers["Retry-After"] = str(seconds)
            return page
        user = await anyio.to_thread.run_sync(lambda: authenticate(store, username, password))
        if user is None:
            return _login_page(
                request,
                next_path=next_path,
                error="Wrong username or password.",
                status_code=401,
            )
        await anyio.to_thread.run_sync(lambda: auth.throttle.succeeded(store, ip, username))
        response = RedirectResponse(next_path, status_code=303)
        await end_session(request, response)  # a fresh session id at every login
        await start_session(request, response, user.user_id)
        return response

    @router.post("/logout", dependencies=CSRF)
    async def logout(request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        await end_session(request, response)
        return response


# Connections ----------------------------------------------------------------------------


async def _connections_page(
    request: Request,
    user: User,
    *,
    flash: str | None = None,
    flash_kind: str = "ok",
    errors: dict[str, dict[str, str]] | None = None,
    status_code: int = 200,
) -> Response:
    view = await connections_view(services_of(request))
    return templates.TemplateResponse(
        request,
        "settings_connections.html",
        {
            "user": user,
            "active": "connections",
            "view": view,
            "fields": {name: fields_of(name) for name in CONNECTIONS},
            "errors": errors or {},
            "flash": flash,
            "flash_kind": flash_kind,
        },
        status_code=status_code,
    )


def _add_connection_pages(router: APIRouter) -> None:
    @router.get("/settings/connections", response_class=HTMLResponse)
    async def connections_page(request: Request, user: CurrentUser) -> Response:
        return await _connections_page(request, user)

    @router.post("/settings/connections/{name}", dependencies=CSRF)
    async def save_connection(request: Request, name: str, user: CurrentUser) -> Response:
        connection = connection_name(name)
        if connection is None:
            return await _connections_page(
                request, user, flash="No such connection.", flash_kind="error", status_code=404
            )
        form = await _form(request)
        values: dict[str, str | None] = {}
        for field in fields_of(connection):
            if form.get(f"clear_{field.name}"):
                values[field.name] = ""
            elif form.get(field.name, "").strip():
                values[field.name] = form[field.name]
        services = services_of(request)
        try:
            await anyio.to_thread.run_sync(lambda: services.credentials.save(connection, values))
        except CredentialsError as exc:
            return await _connections_page(
                request,
                user,
                flash="Not saved: check the highlighted fields.",
                flash_kind="error",
                errors={connection: exc.problems},
                status_code=422,
            )
        return await _connections_page(request, user, flash="Saved (encrypted).")

    @router.post("/settings/connections/{name}/test", dependencies=CSRF)
    async def test_connection_page(request: Request, name: str, user: CurrentUser) -> Response:
        connection = connection_name(name)
        if connection is None:
            return await _connections_page(
                request, user, flash="No such connection.", flash_kind="error", status_code=404
            )
        result = await test_connection(services_of(request), connection)
        title = "Stripe" if connection == "stripe" else "Customer.io"
        status = "works" if result["ok"] else "failed"
        return await _connections_page(
            request,
            user,
            flash=f"{title} connection {status}: {result['detail']}",
            flash_kind="ok" if result["ok"] else "error",
        )


# Alerts ---------------------------------------------------------------------------------


async def _alerts_page(
    request: Request,
    user: User,
    *,
    flash: str | None = None,
    flash_kind: str = "ok",
    errors: dict[str, str] | None = None,
    results: list[dict[str, Any]] | None = None,
    status_code: int = 200,
) -> Response:
    view = await alerts_view(services_of(request))
    return templates.TemplateResponse(
        request,
        "settings_alerts.html",
        {
            "user": user,
            "active": "alerts",
            "alerts": view,
            "errors": errors or {},
            "results": results,
            "flash": flash,
            "flash_kind": flash_kind,
        },
        status_code=status_code,
    )


ALERT_SWITCHES = (
    "on_failures",
    "on_stall",
    "on_retrying",
    "on_signatures",
    "on_stripe_silence",
    "on_endpoint",
    "on_no_worker",
)
ALERT_THRESHOLDS = (
    "stall_minutes",
    "group_minutes",
    "retrying_minutes",
    "retrying_count",
    "signature_failures",
    "signature_window_minutes",
    "stripe_silence_hours",
    "no_worker_seconds",
)


def _alert_changes(form: dict[str, str]) -> dict[str, Any]:
    """Checkboxes are on when posted; a blank threshold keeps the saved one (the model
    checks the numbers)."""
    changes: dict[str, Any] = {name: name in form for name in ALERT_SWITCHES}
    for name in ALERT_THRESHOLDS:
        value = form.get(name, "").strip()
        if value:
            changes[name] = value
    for name in ("slack_url", "webhook_url"):
        if form.get(f"clear_{name}"):
            changes[name] = ""
        elif form.get(name, "").strip():
            changes[name] = form[name].strip()
    message_id = form.get("email_message_id", "").strip()
    to = form.get("email_to", "").strip()
    changes["email"] = (
        {"transactional_message_id": message_id, "to": to} if (message_id or to) else None
    )
    return changes


def _add_alert_pages(router: APIRouter) -> None:
    @router.get("/settings/alerts", response_class=HTMLResponse)
    async def alerts_page(request: Request, user: CurrentUser) -> Response:
        return await _alerts_page(request, user)

    @router.post("/settings/alerts", dependencies=CSRF)
    async def save_alerts(request: Request, user: CurrentUser) -> Response:
        changes = _alert_changes(await _form(request))
        config, problems = await update_alerts(request, services_of(request), changes)
        if config is None:
            return await _alerts_page(
                request,
                user,
                flash="Not saved: check the highlighted fields.",
                flash_kind="error",
                errors=problems,
                status_code=422,
            )
        return await _alerts_page(request, user, flash="Alert settings saved.")

    @router.post("/settings/alerts/test", dependencies=CSRF)
    async def test_alerts(request: Request, user: CurrentUser) -> Response:
        outcome = await send_test_alert(services_of(request))
        if not outcome["results"]:
            return await _alerts_page(request, user, flash=outcome["detail"], flash_kind="error")
        return await _alerts_page(
            request,
            user,
            flash="Test alert sent." if outcome["ok"] else "Some channels did not work.",
            flash_kind="ok" if outcome["ok"] else "error",
            results=outcome["results"],
        )


# Tokens ---------------------------------------------------------------------------------


async def _tokens_page(
    request: Request,
    user: User,
    *,
    flash: str | None = None,
    flash_kind: str = "ok",
    new_token: str | None = None,
    status_code: int = 200,
) -> Response:
    store = services_of(request).store
    tokens = await anyio.to_thread.run_sync(store.list_api_tokens)
    return templates.TemplateResponse(
        request,
        "settings_tokens.html",
        {
            "user": user,
            "active": "tokens",
            "tokens": tokens,
            "new_token": new_token,
            "env_token": services_of(request).settings.api_token is not None,
            "flash": flash,
            "flash_kind": flash_kind,
        },
        status_code=status_code,
        headers={"Cache-Control": "no-store"},
    )


def _add_token_pages(router: APIRouter) -> None:
    @router.get("/settings/tokens", response_class=HTMLResponse)
    async def tokens_page(request: Request, user: CurrentUser) -> Response:
        return await _tokens_page(request, user)

    @router.post("/settings/tokens", dependencies=CSRF)
    async def create_token(request: Request, user: CurrentUser) -> Response:
        name = (await _form(request)).get("name", "")
        store = services_of(request).store
        try:
            token, record = await anyio.to_thread.run_sync(lambda: create_api_token(store, name))
        except ConfigurationError as exc:
            return await _tokens_page(
                request, user, flash=str(exc), flash_kind="error", status_code=422
            )
        return await _tokens_page(
            request,
            user,
            flash=f"Token “{record.name}” created. Copy it now: it is not shown again.",
            new_token=token,
        )

    @router.post("/settings/tokens/{token_id}/revoke", dependencies=CSRF)
    async def revoke_token(request: Request, token_id: int, user: CurrentUser) -> Response:
        store = services_of(request).store
        revoked = await anyio.to_thread.run_sync(lambda: store.revoke_api_token(token_id))
        if not revoked:
            return await _tokens_page(
                request, user, flash="No active token with that id.", flash_kind="error"
            )
        return await _tokens_page(request, user, flash="Token revoked.")


def install_access(app: FastAPI, settings: Settings) -> None:
    """Everything access needs on the app: the `/api/*` guard, the login redirect, the
    login/settings pages and the settings JSON API."""
    install_auth(app, settings)
    install_trusted_proxies(app, settings)  # outermost: the guard and pages see the client
    app.include_router(build_access_api_router())
    app.include_router(build_access_pages_router())
