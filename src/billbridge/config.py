"""Settings: one frozen object built once from the environment (and `.env`), passed explicitly."""

from __future__ import annotations

import ipaddress
import secrets
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from billbridge.errors import ConfigurationError

DEFAULT_DATABASE_URL = "sqlite:///./var/billbridge.db"
DEFAULT_RETRY_SCHEDULE: tuple[float, ...] = (5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800)
DEFAULT_RETRY_WINDOW = 259_200.0  # seconds: 72 h, like Stripe's own retries

CUSTOMERIO_TRACK_URLS = {"us": "https://track.customer.io", "eu": "https://track-eu.customer.io"}
CUSTOMERIO_APP_URLS = {"us": "https://api.customer.io", "eu": "https://api-eu.customer.io"}

TestModeEvents = Literal["deliver", "dry_run", "ignore"]
CioMode = Literal["live", "test"]  # which Customer.io workspace a call goes to
# Where a livemode:false event's calls go (`Settings.test_mode_route`).
TestModeRoute = Literal["test", "live", "dry_run", "ignore"]
TransactionalTimeoutPolicy = Literal["fail", "retry"]
CustomerDeletedPolicy = Literal["keep", "suppress", "delete"]
ErasureCioAction = Literal["delete", "suppress", "none"]
RETENTION_FLOOR_DAYS = 30  # Stripe retries for 3 days; reconcile reads 30 days of events


class Settings(BaseSettings):
    """Everything configurable, read from environment variables (SPEC §2) and `.env`."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    database_url: str = Field(default=DEFAULT_DATABASE_URL, alias="DATABASE_URL")
    stripe_webhook_secret: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        default=(), alias="STRIPE_WEBHOOK_SECRET"
    )
    stripe_api_key: SecretStr | None = Field(default=None, alias="STRIPE_API_KEY")
    stripe_api_base: str = Field(default="https://api.stripe.com", alias="STRIPE_API_BASE")

    customerio_site_id: str | None = Field(default=None, alias="CUSTOMERIO_SITE_ID")
    customerio_track_api_key: SecretStr | None = Field(
        default=None, alias="CUSTOMERIO_TRACK_API_KEY"
    )
    customerio_app_api_key: SecretStr | None = Field(default=None, alias="CUSTOMERIO_APP_API_KEY")
    customerio_region: Literal["us", "eu"] = Field(default="us", alias="CUSTOMERIO_REGION")
    customerio_track_url_override: str | None = Field(default=None, alias="CUSTOMERIO_TRACK_URL")
    customerio_app_url_override: str | None = Field(default=None, alias="CUSTOMERIO_APP_URL")
    customerio_timeout: float = Field(default=10.0, alias="CUSTOMERIO_TIMEOUT", gt=0)  # seconds
    # The test-mode workspace (livemode:false events); region and URLs default to the live ones.
    customerio_test_site_id: str | None = Field(default=None, alias="CUSTOMERIO_TEST_SITE_ID")
    customerio_test_track_api_key: SecretStr | None = Field(
        default=None, alias="CUSTOMERIO_TEST_TRACK_API_KEY"
    )
    customerio_test_app_api_key: SecretStr | None = Field(
        default=None, alias="CUSTOMERIO_TEST_APP_API_KEY"
    )
    customerio_test_region: Literal["us", "eu"] | None = Field(
        default=None, alias="CUSTOMERIO_TEST_REGION"
    )
    customerio_test_track_url_override: str | None = Field(
        default=None, alias="CUSTOMERIO_TEST_TRACK_URL"
    )
    customerio_test_app_url_override: str | None = Field(
        default=None, alias="CUSTOMERIO_TEST_APP_URL"
    )

    identifier: str = Field(default="stripe_customer_id", alias="BILLBRIDGE_IDENTIFIER")
    # Unset: test-mode events go to the test workspace when one is configured, else dry_run.
    test_mode_events: TestModeEvents | None = Field(
        default=None, alias="BILLBRIDGE_TEST_MODE_EVENTS"
    )
    retry_schedule: Annotated[tuple[float, ...], NoDecode] = Field(
        default=DEFAULT_RETRY_SCHEDULE, alias="BILLBRIDGE_RETRY_SCHEDULE"
    )
    retry_window: float = Field(default=DEFAULT_RETRY_WINDOW, alias="BILLBRIDGE_RETRY_WINDOW", gt=0)
    # What a timed-out transactional send becomes: "fail" = status failed with outcome
    # "unknown", replayable by hand with force (never sent twice behind the user's back);
    # "retry" = retried like any other call (may send twice).
    transactional_timeout_policy: TransactionalTimeoutPolicy = Field(
        default="fail", alias="BILLBRIDGE_TRANSACTIONAL_TIMEOUT_POLICY"
    )
    customer_deleted_policy: CustomerDeletedPolicy = Field(
        default="keep", alias="BILLBRIDGE_CUSTOMER_DELETED_POLICY"
    )

    # "auto": when several Track person calls are ready at once they go out as one Track v2
    # batch request (same effect, far fewer HTTP calls); "off": always one v1 call each.
    track_batching: Literal["auto", "off"] = Field(
        default="auto", alias="BILLBRIDGE_TRACK_BATCHING"
    )
    worker_concurrency: int = Field(default=512, alias="BILLBRIDGE_WORKER_CONCURRENCY", ge=1)
    lease_seconds: float = Field(default=60.0, alias="BILLBRIDGE_LEASE_SECONDS", gt=0)
    log_format: Literal["console", "json"] = Field(default="console", alias="BILLBRIDGE_LOG_FORMAT")
    log_level: str = Field(default="INFO", alias="BILLBRIDGE_LOG_LEVEL")
    max_body_bytes: int = Field(default=1_048_576, alias="BILLBRIDGE_MAX_BODY_BYTES", gt=0)
    var_dir: Path = Field(default=Path("./var"), alias="BILLBRIDGE_VAR_DIR")
    stripe_cache_seconds: float = Field(default=300.0, alias="BILLBRIDGE_STRIPE_CACHE_SECONDS")

    # Customer.io pacing, shared by every process on the database (0 turns one off).
    cio_app_rps: float = Field(default=10.0, alias="BILLBRIDGE_CIO_APP_RPS", ge=0)
    cio_broadcast_interval: float = Field(
        default=10.0, alias="BILLBRIDGE_CIO_BROADCAST_INTERVAL", ge=0
    )  # seconds between broadcast triggers
    cio_track_rps: float = Field(default=1000.0, alias="BILLBRIDGE_CIO_TRACK_RPS", ge=0)
    # `billbridge worker` serves /healthz, /readyz and /metrics on this port when set.
    worker_metrics_port: int | None = Field(
        default=None, alias="BILLBRIDGE_WORKER_METRICS_PORT", ge=1, le=65535
    )
    worker_metrics_host: str = Field(
        default="127.0.0.1", alias="BILLBRIDGE_WORKER_METRICS_HOST", min_length=1
    )

    # Access, connections and alerts (the dashboard) -------------------------------------
    api_token: SecretStr | None = Field(default=None, alias="BILLBRIDGE_API_TOKEN")
    admin_username: str = Field(default="admin", alias="BILLBRIDGE_ADMIN_USERNAME", min_length=1)
    admin_password: SecretStr | None = Field(default=None, alias="BILLBRIDGE_ADMIN_PASSWORD")
    secret_key: SecretStr | None = Field(default=None, alias="BILLBRIDGE_SECRET_KEY")
    cookie_secure: bool = Field(default=False, alias="BILLBRIDGE_COOKIE_SECURE")
    session_lifetime: float = Field(default=43_200.0, alias="BILLBRIDGE_SESSION_LIFETIME", gt=0)
    public_url: str | None = Field(default=None, alias="BILLBRIDGE_PUBLIC_URL")
    # Reverse proxies whose X-Forwarded-For/-Proto are believed (addresses, networks or
    # "*"); empty = the TCP peer is the client, whatever headers it sends.
    forwarded_allow_ips: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), alias="BILLBRIDGE_FORWARDED_ALLOW_IPS"
    )
    # /openapi.json without credentials (off: it needs a token or a login like /api/*).
    public_api_docs: bool = Field(default=False, alias="BILLBRIDGE_PUBLIC_API_DOCS")
    # After a workflow is saved, toggled or deleted, set the Stripe endpoint's enabled
    # events to what the enabled workflows need (off: only show the difference).
    webhook_auto_sync: bool = Field(default=False, alias="BILLBRIDGE_WEBHOOK_AUTO_SYNC")
    # For tests only: lets alert URLs point at 127.0.0.1 (a local receiver).
    alerts_allow_loopback: bool = Field(default=False, alias="BILLBRIDGE_ALERTS_ALLOW_LOOPBACK")
    alerts_check_interval: float = Field(
        default=30.0, alias="BILLBRIDGE_ALERTS_CHECK_INTERVAL", gt=0
    )  # seconds between looks at failures and the queue
    # Seconds between reconcile runs in `serve` (needs STRIPE_API_KEY); 0 turns it off.
    reconcile_interval: float = Field(default=3600.0, alias="BILLBRIDGE_RECONCILE_INTERVAL", ge=0)
    # Retention and erasure (billbridge/retention.py, billbridge/erasure.py) ---------------
    # Days after which finished events lose their payload and bodies; 0 (or "off") keeps
    # them forever. At least RETENTION_FLOOR_DAYS otherwise.
    retention_days: int = Field(default=90, alias="BILLBRIDGE_RETENTION_DAYS")
    retention_interval: float = Field(
        default=3600.0, alias="BILLBRIDGE_RETENTION_INTERVAL", gt=0
    )  # seconds between retention runs (one process of the fleet runs each)
    erasure_cio_action: ErasureCioAction = Field(
        default="delete", alias="BILLBRIDGE_ERASURE_CIO_ACTION"
    )

    @field_validator("retention_days", mode="before")
    @classmethod
    def _retention_off(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("off", "none", "never"):
            return 0
        return value

    @field_validator("retention_days")
    @classmethod
    def _check_retention(cls, value: int) -> int:
        if value != 0 and value < RETENTION_FLOOR_DAYS:
            raise ValueError(
                f"{value} days is below the floor of {RETENTION_FLOOR_DAYS}: event ids must "
                "outlive Stripe's retries (3 days) and reconcile's look-back (the Events API "
                f"keeps 30 days) to stay de-duplicated; use {RETENTION_FLOOR_DAYS} or more, "
                "or 0 / off to keep everything"
            )
        return value

    @field_validator("stripe_webhook_secret", mode="before")
    @classmethod
    def _split_secrets(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, tuple):
            for part in value:
                if part != "*":
                    try:
                        ipaddress.ip_network(part, strict=False)
                    except ValueError:
                        raise ValueError(
                            f"{part!r} is not an IP address or network (or *)"
                        ) from None
        return value

    @field_validator("retry_schedule", mode="before")
    @classmethod
    def _split_schedule(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                parsed = tuple(float(part) for part in value.split(",") if part.strip())
            except ValueError:
                raise ValueError("must be seconds separated by commas, e.g. 5,30,120") from None
            return parsed
        return value

    @field_validator("retry_schedule")
    @classmethod
    def _check_schedule(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(step <= 0 for step in value):
            raise ValueError("needs at least one positive number of seconds")
        return value

    @field_validator("identifier")
    @classmethod
    def _check_identifier(cls, value: str) -> str:
        if value in ("stripe_customer_id", "email"):
            return value
        if value.startswith("metadata:") and len(value) > len("metadata:"):
            return value
        raise ValueError("must be stripe_customer_id, email or metadata:KEY")

    @model_validator(mode="after")
    def _check_customerio_pair(self) -> Settings:
        if bool(self.customerio_site_id) != bool(self.customerio_track_api_key):
            raise ValueError("CUSTOMERIO_SITE_ID and CUSTOMERIO_TRACK_API_KEY must be set together")
        if bool(self.customerio_test_site_id) != bool(self.customerio_test_track_api_key):
            raise ValueError(
                "CUSTOMERIO_TEST_SITE_ID and CUSTOMERIO_TEST_TRACK_API_KEY must be set together"
            )
        for secret in self.stripe_webhook_secret:
            if not secret.get_secret_value().startswith("whsec_"):
                raise ValueError("each STRIPE_WEBHOOK_SECRET must start with whsec_")
        return self

    # Derived values -----------------------------------------------------------------

    @property
    def track_base_url(self) -> str:
        """Track API origin without a path; `/api/v1/...` and `/api/v2/...` are appended."""
        return (
            self.customerio_track_url_override or CUSTOMERIO_TRACK_URLS[self.customerio_region]
        ).rstrip("/")

    @property
    def app_base_url(self) -> str:
        """App API origin without a path; `/v1/...` is appended."""
        return (
            self.customerio_app_url_override or CUSTOMERIO_APP_URLS[self.customerio_region]
        ).rstrip("/")

    @property
    def test_track_base_url(self) -> str:
        """The test workspace's Track origin: its own override or region, else the live one."""
        if self.customerio_test_track_url_override:
            return self.customerio_test_track_url_override.rstrip("/")
        if self.customerio_test_region is not None:
            return CUSTOMERIO_TRACK_URLS[self.customerio_test_region]
        return self.track_base_url

    @property
    def test_app_base_url(self) -> str:
        """The test workspace's App origin: its own override or region, else the live one."""
        if self.customerio_test_app_url_override:
            return self.customerio_test_app_url_override.rstrip("/")
        if self.customerio_test_region is not None:
            return CUSTOMERIO_APP_URLS[self.customerio_test_region]
        return self.app_base_url

    @property
    def dry_run(self) -> bool:
        """No Track credentials: compute and record every request, send nothing."""
        return not (self.customerio_site_id and self.customerio_track_api_key)

    @property
    def has_test_workspace(self) -> bool:
        """Track credentials of a test-mode workspace are configured."""
        return bool(self.customerio_test_site_id and self.customerio_test_track_api_key)

    @property
    def test_mode_route(self) -> TestModeRoute:
        """Where livemode:false events go. BILLBRIDGE_TEST_MODE_EVENTS unset: the test
        workspace, or dry_run without one; `deliver`: the test workspace when configured,
        else the live one; `dry_run` and `ignore` as named."""
        policy = self.test_mode_events
        if policy in ("dry_run", "ignore"):
            return policy
        if self.has_test_workspace:
            return "test"
        return "live" if policy == "deliver" else "dry_run"

    @property
    def webhook_secrets(self) -> tuple[str, ...]:
        return tuple(secret.get_secret_value() for secret in self.stripe_webhook_secret)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def load_settings(**overrides: object) -> Settings:
    """Build Settings from the environment; a bad value becomes a ConfigurationError naming it."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]) or "configuration"
            problems.append(f"{name}: {error['msg']}")
        raise ConfigurationError("invalid configuration: " + "; ".join(problems)) from None


def dev_webhook_secret(var_dir: Path) -> str:
    """The generated development secret kept in `var_dir` (created on first use, mode 0600)."""
    path = var_dir / "dev-webhook-secret"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    var_dir.mkdir(parents=True, exist_ok=True)
    secret = "whsec_dev_" + secrets.token_hex(24)
    path.touch(mode=0o600)
    path.write_text(secret + "\n", encoding="utf-8")
    return secret
