"""The login throttle's table (on the one MetaData): failed logins per account and per address.

One row per key (`account:<username>` or `address:<client address>`): how many attempts
failed (or are being checked) since the state last reset, and when the latest began.
Every process reads and writes it, so the throttle holds across `serve` instances.
"""

from __future__ import annotations

import sqlalchemy as sa

from billbridge.store.tables import Seconds, metadata

login_throttle = sa.Table(
    "login_throttle",
    metadata,
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("failures", sa.Integer(), nullable=False),
    sa.Column("last_failure_at", Seconds(), nullable=False, index=True),
)

THROTTLE_TABLES = (login_throttle,)
