"""Every environment variable Billbridge reads, so CLI tests can start from a clean slate."""

from __future__ import annotations

from billbridge.config import Settings

# Read from the Settings model itself: a setting added later is cleared too.
SETTINGS_ENV: tuple[str, ...] = tuple(
    field.alias for field in Settings.model_fields.values() if field.alias
)

# BILLBRIDGE_SECRET_KEY for processes on PostgreSQL, where it is required (any passphrase).
FLEET_SECRET_KEY = "billbridge-tests-fleet-key"
