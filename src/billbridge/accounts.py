"""Dashboard accounts and API tokens: argon2id password hashes, tokens stored as hashes.

hashed = hash_password("correct horse")      # "$argon2id$v=19$m=65536,t=3,p=4$..."
verify_password(hashed, "correct horse")     # True
token, record = create_api_token(store, "ci")  # the token is shown once, never stored
"""

from __future__ import annotations

import hashlib
import secrets

import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from billbridge.config import Settings
from billbridge.errors import ConfigurationError
from billbridge.store.base import Store
from billbridge.store.records_access import ApiTokenRecord, UserRecord

log = structlog.get_logger("billbridge.accounts")

MIN_PASSWORD_LENGTH = 10
TOKEN_PREFIX = "bb_"  # noqa: S105 - a marker, not a secret
_hasher = PasswordHasher()  # argon2id with the library's (RFC 9106 low-memory) parameters
# Verified against when the username is unknown, so both cases take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def hash_token(token: str) -> str:
    """SHA-256 hex of a high-entropy token (sessions, API tokens): enough, no KDF needed."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches; constant work also for a missing user (None)."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ConfigurationError(f"the password needs at least {MIN_PASSWORD_LENGTH} characters")


def create_user(store: Store, username: str, password: str) -> UserRecord:
    """Create the account (or set its new password, logging it out everywhere)."""
    username = username.strip()
    if not username:
        raise ConfigurationError("the username must not be empty")
    check_password_rules(password)
    user = store.save_user(username, hash_password(password))
    store.delete_user_sessions(user.user_id)
    return user


def authenticate(store: Store, username: str, password: str) -> UserRecord | None:
    """The user when the password matches, else None."""
    user = store.get_user(username.strip())
    if not verify_password(user.password_hash if user else None, password):
        return None
    return user


def ensure_admin_from_env(settings: Settings, store: Store) -> UserRecord | None:
    """On first run (no account yet) create the admin from BILLBRIDGE_ADMIN_PASSWORD."""
    if settings.admin_password is None or store.count_users() > 0:
        return None
    user = create_user(store, settings.admin_username, settings.admin_password.get_secret_value())
    log.info("admin account created from BILLBRIDGE_ADMIN_PASSWORD", username=user.username)
    return user


DEV_ADMIN_PASSWORD_FILE = "dev-admin-password"  # noqa: S105 - a file name


def ensure_dev_admin(settings: Settings, store: Store) -> str | None:
    """Under `serve --dev` (what `make run` does): with no account yet and no
    BILLBRIDGE_ADMIN_PASSWORD, create `admin` with a generated password kept in the var
    directory (mode 0600), so the dashboard can be opened at once. Returns the password
    when the dev admin is the account to use, else None."""
    path = settings.var_dir / DEV_ADMIN_PASSWORD_FILE
    if store.count_users() > 0:
        if path.exists() and authenticate(store, "admin", path.read_text().strip()):
            return path.read_text(encoding="utf-8").strip()
        return None
    if settings.admin_password is not None:
        return None  # the lifespan creates that admin
    password = secrets.token_urlsafe(12)
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(password + "\n", encoding="utf-8")
    create_user(store, "admin", password)
    log.info("development admin account created", username="admin")
    return password


def create_api_token(store: Store, name: str) -> tuple[str, ApiTokenRecord]:
    """A new token (returned once; only its SHA-256 is stored) and its record."""
    name = name.strip()
    if not name:
        raise ConfigurationError("give the token a name (what script or person uses it)")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = store.create_api_token(name, hash_token(token), token[:8])
    return token, record
