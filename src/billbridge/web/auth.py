"""Who is calling: browser sessions, CSRF tokens, API bearer tokens and the login throttle.

    @router.get("/", response_class=HTMLResponse)
    async def overview(request: Request, user: Annotated[User, Depends(require_user)]): ...

    @router.post("/workflows/{id}/toggle", dependencies=[Depends(verify_csrf)])

Sessions live server-side (table `sessions`); the cookie carries a random token and the
database only its SHA-256. Each session has its own CSRF token; before login the form
uses a double-submit cookie instead. `/api/*` is guarded by `ApiGuard` (an ASGI
middleware, so that no router can forget it): a Bearer token (BILLBRIDGE_API_TOKEN or one
made by `billbridge tokens create`), or a session plus the `X-CSRF-Token` header for
unsafe methods.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote

import anyio
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from billbridge.accounts import hash_token
from billbridge.config import Settings
from billbridge.errors import StoreUnavailableError
from billbridge.services import Services
from billbridge.store.base import Store
from billbridge.store.records_access import SessionRecord, ThrottleLimit

SESSION_COOKIE = "billbridge_session"
CSRF_COOKIE = "billbridge_csrf"  # the double-submit token for forms shown before login
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ACCOUNT_LIMIT = ThrottleLimit(free=5)  # failed logins per account before delays begin
ADDRESS_LIMIT = ThrottleLimit(free=20)  # per client address (many people behind one NAT)

_NO_SESSION = "none"


@dataclass(frozen=True)
class User:
    """A logged-in dashboard user."""

    user_id: int
    username: str


@dataclass(frozen=True)
class Principal:
    """Who made an API call: a session's user, the start-up token, or a stored token."""

    kind: Literal["session", "env_token", "token"]
    name: str


class LoginRequired(Exception):
    """Raised by `require_user`; the registered handler redirects to the login page."""

    def __init__(self, next_path: str) -> None:
        super().__init__("login required")
        self.next_path = next_path


def new_token(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.auth.settings
    return settings


def cookie_secure(request: Request) -> bool:
    """Secure cookies when the request came over https or BILLBRIDGE_COOKIE_SECURE says so."""
    return request.url.scheme == "https" or _settings(request).cookie_secure


# Sessions -------------------------------------------------------------------------------


async def load_session(request: Request) -> SessionRecord | None:
    """The request's live session (looked up once per request), or None."""
    cached = getattr(request.state, "bb_session", None)
    if cached is not None:
        return None if cached == _NO_SESSION else cached
    session: SessionRecord | None = None
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        services: Services = request.app.state.services
        try:
            session = await anyio.to_thread.run_sync(
                lambda: services.store.get_session(hash_token(token))
            )
        except StoreUnavailableError as exc:
            raise HTTPException(503, str(exc)) from None
    request.state.bb_session = session if session is not None else _NO_SESSION
    return session


async def current_user(request: Request) -> User | None:
    """The logged-in user, or None (never raises for a missing login)."""
    session = await load_session(request)
    return None if session is None else User(session.user_id, session.username)


async def require_user(request: Request) -> User:
    """Dependency for HTML pages: the logged-in user, or a redirect to `/login?next=...`."""
    user = await current_user(request)
    if user is None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(path)
    return user


async def start_session(request: Request, response: Response, user_id: int) -> None:
    """Log `user_id` in: a new server-side session and its cookie (HttpOnly, SameSite=Lax)."""
    services: Services = request.app.state.services
    token = new_token()
    lifetime = _settings(request).session_lifetime
    csrf = new_token()
    await anyio.to_thread.run_sync(
        lambda: services.store.create_session(hash_token(token), user_id, csrf, lifetime)
    )
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(lifetime),
        path="/",
        httponly=True,
        samesite="lax",
        secure=cookie_secure(request),
    )


async def end_session(request: Request, response: Response) -> None:
    """Log out: delete the server-side session and clear the cookie."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        services: Services = request.app.state.services
        await anyio.to_thread.run_sync(lambda: services.store.delete_session(hash_token(token)))
    request.state.bb_session = _NO_SESSION
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=cookie_secure(request)
    )


# CSRF -----------------------------------------------------------------------------------


def csrf_token(request: Request) -> str:
    """The token a form must send back as `csrf_token` (or the `X-CSRF-Token` header).

    The session's token once its session was loaded (by `require_user`); before login a
    double-submit cookie's value (set on the response by `install_auth`'s middleware).
    """
    session = getattr(request.state, "bb_session", None)
    if isinstance(session, SessionRecord):
        return session.csrf_token
    fresh: str | None = getattr(request.state, "bb_new_csrf", None)
    if fresh:
        return fresh
    cookie = request.cookies.get(CSRF_COOKIE)
    if cookie and len(cookie) >= 32:
        return cookie
    fresh = new_token()
    request.state.bb_new_csrf = fresh
    return fresh


def _same(given: str | None, expected: str | None) -> bool:
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


async def verify_csrf(request: Request) -> None:
    """Dependency for form POSTs: 403 unless the form field `csrf_token` or the
    `X-CSRF-Token` header carries the session's token (before login: the cookie's)."""
    given = request.headers.get(CSRF_HEADER)
    if not given:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get(CSRF_FIELD)
            given = value if isinstance(value, str) else None
    session = await load_session(request)
    expected = session.csrf_token if session is not None else request.cookies.get(CSRF_COOKIE)
    if not _same(given, expected):
        raise HTTPException(
            403, "the form has expired or did not come from this site: reload the page and retry"
        )


# The API --------------------------------------------------------------------------------


async def authenticate_api(request: Request) -> Principal:
    """A Bearer token, or a session (plus the CSRF header for unsafe methods).

    Raises HTTPException 401 (no or bad credentials) or 403 (session without CSRF header).
    """
    cached: Principal | None = getattr(request.state, "bb_principal", None)
    if cached is not None:
        return cached
    principal = await _authenticate(request)
    request.state.bb_principal = principal
    return principal


async def _authenticate(request: Request) -> Principal:
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if authorization:
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("use the Authorization: Bearer TOKEN scheme")
        env_token = _settings(request).api_token
        if env_token is not None and _same(token, env_token.get_secret_value()):
            return Principal("env_token", "BILLBRIDGE_API_TOKEN")
        services: Services = request.app.state.services
        try:
            record = await anyio.to_thread.run_sync(
                lambda: services.store.find_api_token(hash_token(token))
            )
        except StoreUnavailableError as exc:
            raise HTTPException(503, str(exc)) from None
        if record is None:
            raise _unauthorized("the API token is unknown or revoked")
        return Principal("token", record.name)
    session = await load_session(request)
    if session is None:
        raise _unauthorized(
            "authentication required: send Authorization: Bearer TOKEN "
            "(BILLBRIDGE_API_TOKEN or `billbridge tokens create`) or log in"
        )
    if request.method not in SAFE_METHODS and not _same(
        request.headers.get(CSRF_HEADER), session.csrf_token
    ):
        raise HTTPException(403, f"a session-authenticated {request.method} needs {CSRF_HEADER}")
    return Principal("session", session.username)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": 'Bearer realm="billbridge"'})


async def require_api_auth(request: Request) -> Principal:
    """Dependency for `/api` routes (the `ApiGuard` middleware has already checked)."""
    return await authenticate_api(request)


OPENAPI_PATH = "/openapi.json"


def is_api_path(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def route_path(scope: Scope) -> str:
    """The path the router matches: the request's path without the app's `root_path`
    (mounted under `/bb`, a request for `/bb/api/x` is routed as `/api/x`)."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and (path == root_path or path.startswith(root_path + "/")):
        return path[len(root_path) :] or "/"
    return path


class ApiGuard:
    """ASGI middleware: every `/api/*` request (and `/openapi.json`, unless
    BILLBRIDGE_PUBLIC_API_DOCS) must authenticate (see `authenticate_api`), matched on the
    route path so that a `root_path` cannot slip past it; and a freshly minted
    double-submit CSRF token is set as a cookie on the way out."""

    def __init__(self, app: ASGIApp, *, public_api_docs: bool = False) -> None:
        self.app = app
        self.public_api_docs = public_api_docs

    def _guarded(self, path: str) -> bool:
        return is_api_path(path) or (path == OPENAPI_PATH and not self.public_api_docs)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        if self._guarded(route_path(scope)):
            try:
                await authenticate_api(request)
            except HTTPException as exc:
                response = JSONResponse(
                    {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
                )
                await response(scope, receive, send)
                return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                fresh = scope.get("state", {}).get("bb_new_csrf")
                if fresh:
                    cookie = Response()
                    cookie.set_cookie(
                        CSRF_COOKIE,
                        fresh,
                        path="/",
                        httponly=True,
                        samesite="lax",
                        secure=cookie_secure(request),
                    )
                    headers = MutableHeaders(scope=message)
                    headers.append("set-cookie", cookie.headers["set-cookie"])
            await send(message)

        await self.app(scope, receive, send_with_cookie)


# Login throttle -------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginThrottle:
    """Growing delays after failed logins, per account and per client address, kept in the
    database so every process shares them (`Store.begin_login_attempt`).

    An attempt is counted before the password is checked (so parallel tries cannot slip
    through together) and taken back when it succeeds. Per account: 5 free failures, then
    1, 2, 4, ... up to 60 s between tries; per address: 20 free failures (it may be many
    people behind one proxy), then the same. The client address is the TCP peer unless
    BILLBRIDGE_FORWARDED_ALLOW_IPS names the proxy in front (`install_trusted_proxies`).
    """

    account: ThrottleLimit = ACCOUNT_LIMIT
    address: ThrottleLimit = ADDRESS_LIMIT

    @staticmethod
    def keys(address: str, username: str) -> tuple[str, str]:
        return f"account:{username.strip().lower()}", f"address:{address}"

    def begin(self, store: Store, address: str, username: str) -> float:
        """0.0 when the attempt may go ahead (it is counted), else seconds to wait."""
        account_key, address_key = self.keys(address, username)
        return store.begin_login_attempt({account_key: self.account, address_key: self.address})

    def succeeded(self, store: Store, address: str, username: str) -> None:
        account_key, address_key = self.keys(address, username)
        store.end_login_attempt(clear=[account_key], forgive=[address_key])


def install_trusted_proxies(app: FastAPI, settings: Settings) -> None:
    """Take the client address and scheme from X-Forwarded-For/-Proto only when the peer is
    one of BILLBRIDGE_FORWARDED_ALLOW_IPS (off by default: a header anyone can send must
    not choose the address the login throttle counts)."""
    if settings.forwarded_allow_ips:
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(settings.forwarded_allow_ips))


@dataclass
class AuthState:
    """What the auth layer keeps on `app.state.auth`."""

    settings: Settings
    throttle: LoginThrottle = field(default_factory=LoginThrottle)


def install_auth(app: FastAPI, settings: Settings) -> None:
    """Guard `/api/*`, set pre-login CSRF cookies, and turn LoginRequired into a redirect."""
    app.state.auth = AuthState(settings)
    app.add_middleware(ApiGuard, public_api_docs=settings.public_api_docs)

    async def redirect_to_login(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LoginRequired)  # noqa: S101 - registered for this class only
        return RedirectResponse(f"/login?next={quote(exc.next_path, safe='/')}", status_code=303)

    app.add_exception_handler(LoginRequired, redirect_to_login)


__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "LoginRequired",
    "LoginThrottle",
    "Principal",
    "User",
    "csrf_token",
    "current_user",
    "end_session",
    "install_auth",
    "install_trusted_proxies",
    "require_api_auth",
    "require_user",
    "start_session",
    "verify_csrf",
]
