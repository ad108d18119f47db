"""Connection credentials: environment variables over what was saved (encrypted) in the dashboard.

    provider = CredentialsProvider(settings, store, SecretBox.from_settings(settings))
    provider.current().dry_run         # effective Settings, refreshed every few seconds
    provider.save("customerio", {"site_id": "...", "track_api_key": "..."})
    provider.describe()                # masked values and where each one comes from

Every consumer (CustomerIOClient, the executor's dry-run decision through it, the
IdentityResolver's StripeAPI) asks `current()` / `stripe_api()` when it needs them, so
credentials saved in the dashboard apply without a restart, also in a separate
`billbridge worker` process (within `ttl` seconds). A value set in the environment always
wins and cannot be changed from the dashboard.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from pydantic import SecretStr

from billbridge.config import Settings
from billbridge.errors import BillbridgeError, ConfigurationError, StoreUnavailableError
from billbridge.secret_box import SecretBox
from billbridge.store.base import Store
from billbridge.stripe.api import StripeAPI

log = structlog.get_logger("billbridge.credentials")

ConnectionName = Literal["stripe", "customerio", "customerio_test"]
CONNECTIONS: tuple[ConnectionName, ...] = ("stripe", "customerio", "customerio_test")
DEFAULT_TTL = 5.0  # seconds between looks at the stored credentials


@dataclass(frozen=True)
class Field:
    """One credential: its Settings attribute, its environment variable, whether secret."""

    connection: ConnectionName
    name: str
    setting: str
    env: str
    secret: bool
    label: str


FIELDS: tuple[Field, ...] = (
    Field(
        "stripe", "api_key", "stripe_api_key", "STRIPE_API_KEY", True, "Secret or restricted key"
    ),
    Field("customerio", "site_id", "customerio_site_id", "CUSTOMERIO_SITE_ID", False, "Site ID"),
    Field(
        "customerio",
        "track_api_key",
        "customerio_track_api_key",
        "CUSTOMERIO_TRACK_API_KEY",
        True,
        "Track API key",
    ),
    Field(
        "customerio",
        "app_api_key",
        "customerio_app_api_key",
        "CUSTOMERIO_APP_API_KEY",
        True,
        "App API key",
    ),
    Field("customerio", "region", "customerio_region", "CUSTOMERIO_REGION", False, "Region"),
    # The test-mode workspace: Stripe livemode:false events go there.
    Field(
        "customerio_test",
        "site_id",
        "customerio_test_site_id",
        "CUSTOMERIO_TEST_SITE_ID",
        False,
        "Site ID",
    ),
    Field(
        "customerio_test",
        "track_api_key",
        "customerio_test_track_api_key",
        "CUSTOMERIO_TEST_TRACK_API_KEY",
        True,
        "Track API key",
    ),
    Field(
        "customerio_test",
        "app_api_key",
        "customerio_test_app_api_key",
        "CUSTOMERIO_TEST_APP_API_KEY",
        True,
        "App API key",
    ),
    Field(
        "customerio_test",
        "region",
        "customerio_test_region",
        "CUSTOMERIO_TEST_REGION",
        False,
        "Region",
    ),
)


class CredentialsError(BillbridgeError):
    """A credential value was refused; the message names the field, never the value."""

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__("; ".join(f"{name}: {problem}" for name, problem in problems.items()))
        self.problems = problems


def mask(value: str) -> str:
    """`sk_test_…a1b2`: a known prefix and the last four characters, never the whole."""
    cut = value.rfind("_", 0, 9) + 1
    prefix, rest = value[:cut], value[cut:]
    if len(rest) < 10:
        return prefix + "…"
    return f"{prefix}…{rest[-4:]}"


def fields_of(connection: ConnectionName) -> tuple[Field, ...]:
    return tuple(f for f in FIELDS if f.connection == connection)


def _from_env(settings: Settings, field: Field) -> str | None:
    if field.setting == "customerio_region":
        # The region has a default; it counts as "from the environment" only when set.
        return settings.customerio_region if field.setting in settings.model_fields_set else None
    value = getattr(settings, field.setting)
    if value is None:
        return None
    text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    return text or None  # `CUSTOMERIO_SITE_ID=` (empty) counts as not set


class CredentialsProvider:
    """Effective credentials for the running service; thread-safe."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        box: SecretBox,
        *,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base = settings
        self._store = store
        self._box = box
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._stored: dict[str, dict[str, str]] = {}
        self._effective = settings
        self._loaded_at: float | None = None
        self._stripe_key: str | None = None
        self._stripe: StripeAPI | None = None
        self._retired: list[StripeAPI] = []

    # Reading ------------------------------------------------------------------------------

    def current(self) -> Settings:
        """The effective Settings (environment over stored values), at most `ttl` s old.

        When the database cannot be read, the last known values stay in force.
        """
        loaded_at = self._loaded_at
        if loaded_at is None or self._clock() - loaded_at >= self._ttl:
            try:
                self.refresh()
            except (StoreUnavailableError, ConfigurationError) as exc:
                log.warning("stored credentials could not be read", error=str(exc))
                self._loaded_at = self._clock()
        return self._effective

    def refresh(self) -> Settings:
        """Read the stored credentials now."""
        stored = {
            name: self._box.decrypt_json(token)
            for name, token in self._store.get_credentials().items()
        }
        with self._lock:
            self._stored = {
                name: {k: str(v) for k, v in values.items() if isinstance(v, str) and v}
                for name, values in stored.items()
            }
            self._effective = self._merge(self._stored)
            self._loaded_at = self._clock()
            return self._effective

    def _merge(self, stored: Mapping[str, Mapping[str, str]]) -> Settings:
        update: dict[str, Any] = {}
        for field in FIELDS:
            if _from_env(self._base, field) is not None:
                continue
            value = stored.get(field.connection, {}).get(field.name)
            if value is None:
                continue
            update[field.setting] = SecretStr(value) if field.secret else value
        if not update:
            return self._base
        return self._base.model_copy(update=update)

    def stripe_api(self) -> StripeAPI | None:
        """A StripeAPI for the current key (rebuilt when the key changes), or None."""
        settings = self.current()
        key = settings.stripe_api_key.get_secret_value() if settings.stripe_api_key else None
        with self._lock:
            if key != self._stripe_key:
                if self._stripe is not None:
                    # Calls may still run on the old client in other threads: close it at
                    # shutdown, not now.
                    self._retired.append(self._stripe)
                self._stripe = StripeAPI(settings) if key else None
                self._stripe_key = key
            return self._stripe

    def describe(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Per connection and field: whether set, a masked value and its source."""
        self.current()
        with self._lock:
            stored = self._stored
        result: dict[str, dict[str, dict[str, Any]]] = {}
        for field in FIELDS:
            env_value = _from_env(self._base, field)
            stored_value = stored.get(field.connection, {}).get(field.name)
            value = env_value if env_value is not None else stored_value
            source = "env" if env_value is not None else ("dashboard" if stored_value else None)
            shown: str | None = None
            if value is not None:
                shown = mask(value) if field.secret or field.name == "site_id" else value
            result.setdefault(field.connection, {})[field.name] = {
                "label": field.label,
                "set": value is not None,
                "value": shown,
                "source": source,
                "env": field.env,
                "secret": field.secret,
            }
        return result

    # Writing ------------------------------------------------------------------------------

    def save(self, connection: ConnectionName, values: Mapping[str, str | None]) -> None:
        """Merge `values` into the stored credentials of `connection` and encrypt them.

        A missing or None value keeps what is stored; "" removes it. Raises
        CredentialsError for unknown fields, fields set in the environment, bad values.
        """
        known = {f.name: f for f in fields_of(connection)}
        problems: dict[str, str] = {}
        for name in values:
            if name not in known:
                problems[name] = f"unknown field for {connection}"
            elif values[name] is not None and _from_env(self._base, known[name]) is not None:
                problems[name] = (
                    f"set by the environment ({known[name].env}); change it there, not here"
                )
        if problems:
            raise CredentialsError(problems)
        self.refresh()
        with self._lock:
            merged = dict(self._stored.get(connection, {}))
        for name, value in values.items():
            if value is None:
                continue
            if value.strip():
                merged[name] = value.strip()
            else:
                merged.pop(name, None)
        self._validate(connection, merged)
        ciphertext = self._box.encrypt_json(merged) if merged else None
        self._store.save_credential(connection, ciphertext)
        self.refresh()

    def _validate(self, connection: ConnectionName, merged: dict[str, str]) -> None:
        problems: dict[str, str] = {}
        if connection == "stripe":
            key = merged.get("api_key")
            if key is not None and not key.startswith(("sk_", "rk_")):
                problems["api_key"] = "must be a secret (sk_...) or restricted (rk_...) key"
        else:
            region = merged.get("region")
            if region is not None and region not in ("us", "eu"):
                problems["region"] = "must be us or eu"
            known = {f.name: f for f in fields_of(connection)}
            site = merged.get("site_id") or _from_env(self._base, known["site_id"])
            track = merged.get("track_api_key") or _from_env(self._base, known["track_api_key"])
            if bool(site) != bool(track):
                missing = "track_api_key" if site else "site_id"
                problems[missing] = "the Site ID and the Track API key go together"
        if problems:
            raise CredentialsError(problems)

    def close(self) -> None:
        with self._lock:
            clients = [*self._retired, *([self._stripe] if self._stripe else [])]
            self._retired.clear()
            self._stripe = None
            self._stripe_key = None
        for client in clients:
            client.close()
