"""Tables for access control, encrypted credentials and alerts (on the one MetaData)."""

from __future__ import annotations

import sqlalchemy as sa

from billbridge.store.tables import RowId, Seconds, metadata

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(150), nullable=False, unique=True),
    sa.Column("password_hash", sa.Text(), nullable=False),  # argon2id PHC string
    sa.Column("created_at", Seconds(), nullable=False),
    sa.Column("updated_at", Seconds(), nullable=False),
)

# Server-side sessions: the cookie holds a random token, this table only its SHA-256.
sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column(
        "user_id",
        RowId,
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("csrf_token", sa.String(128), nullable=False),
    sa.Column("created_at", Seconds(), nullable=False),
    sa.Column("expires_at", Seconds(), nullable=False, index=True),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),  # the first characters, for lists
    sa.Column("created_at", Seconds(), nullable=False),
    sa.Column("revoked_at", Seconds(), nullable=True),
    sa.Column("last_used_at", Seconds(), nullable=True),
)

# One Fernet token per connection ("stripe", "customerio"): encrypted JSON, never plain.
credentials = sa.Table(
    "credentials",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("ciphertext", sa.Text(), nullable=False),
    sa.Column("updated_at", Seconds(), nullable=False),
)

# Alert configuration (encrypted JSON: webhook URLs are secrets too), one row per key.
alert_settings = sa.Table(
    "alert_settings",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("ciphertext", sa.Text(), nullable=False),
    sa.Column("updated_at", Seconds(), nullable=False),
)

alert_state = sa.Table(
    "alert_state",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("last_sent_at", Seconds(), nullable=True),
    sa.Column("watermark", Seconds(), nullable=False),
)

# Counts every process adds to, per minute (webhooks refused for their signature), so an
# alert sees the whole fleet's number. Buckets older than a day are deleted.
alert_counts = sa.Table(
    "alert_counts",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("bucket", sa.BigInteger(), primary_key=True),  # the minute's start, Unix seconds
    sa.Column("count", sa.BigInteger(), nullable=False),
)

ACCESS_TABLES = (
    users,
    sessions,
    api_tokens,
    credentials,
    alert_settings,
    alert_state,
    alert_counts,
)
