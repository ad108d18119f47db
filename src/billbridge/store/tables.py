"""The schema as SQLAlchemy Core tables; migrations must produce exactly this."""

from __future__ import annotations

import sqlalchemy as sa

# Deterministic constraint names, so that migrations can name what they alter or drop.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

# Open deliveries holding a claim id (the partial index `ix_deliveries_held`).
HELD = "claim_id IS NOT NULL AND status IN ('pending', 'retrying')"
# Row ids: BIGINT on PostgreSQL; on SQLite only INTEGER PRIMARY KEY aliases the rowid
# (64-bit there anyway) and autoincrements.
RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Times are Unix seconds as double precision floats.
Seconds = sa.Double

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column("stripe_event_id", sa.String(255), nullable=False, unique=True),
    sa.Column("type", sa.String(255), nullable=False),
    sa.Column("livemode", sa.Boolean(), nullable=False),
    sa.Column("created", sa.BigInteger(), nullable=False),  # Stripe's event.created
    sa.Column("received_at", Seconds(), nullable=False),
    sa.Column("api_version", sa.String(64), nullable=True),
    sa.Column("account", sa.String(255), nullable=True),
    sa.Column("object_id", sa.String(255), nullable=True),
    sa.Column("customer_id", sa.String(255), nullable=True, index=True),
    sa.Column("email", sa.String(320), nullable=True, index=True),
    sa.Column("payload", sa.Text(), nullable=False),  # the raw body exactly as received
    sa.Column("source", sa.String(32), nullable=False),
    # Set when the payload was replaced by a stub (`billbridge.privacy`): by retention, or
    # by an erasure; such an event is never replayed.
    sa.Column("pruned_at", Seconds(), nullable=True),
    sa.Column("pruned_reason", sa.String(16), nullable=True),  # "retention" | "erasure"
    # What retention looks for: events not pruned yet, oldest first.
    sa.Index("ix_events_retention", "pruned_at", "received_at"),
)

# The outbox and the queue: one row per (event, workflow, action).
deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column(
        "event_id",
        RowId,
        sa.ForeignKey("events.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("stripe_event_id", sa.String(255), nullable=False),
    sa.Column("workflow_id", sa.String(128), nullable=False),
    sa.Column("action_index", sa.Integer(), nullable=False),
    sa.Column("action_type", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempt_count", sa.Integer(), nullable=False),
    # When due. While claimed it equals lease_until, so an expired lease is simply due
    # again and one index serves every claim. NULL once final.
    sa.Column("next_attempt_at", Seconds(), nullable=True),
    sa.Column("lease_until", Seconds(), nullable=True),
    sa.Column("claim_id", sa.String(64), nullable=True),  # the fencing token
    sa.Column("deadline_at", Seconds(), nullable=False),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("force", sa.Boolean(), nullable=False),
    sa.Column("sent_ok", sa.Boolean(), nullable=False),
    sa.Column("created_at", Seconds(), nullable=False),
    sa.Column("updated_at", Seconds(), nullable=False),
    # The worker (`workers.id`) holding the claim: its silence frees the claim early.
    sa.Column("worker_id", sa.String(255), nullable=True),
    # Who the delivery is about (the event's Stripe customer id, else its email; NULL when
    # the event names neither): one person's deliveries are never claimed twice at once.
    sa.Column("person_key", sa.String(320), nullable=True),
    sa.UniqueConstraint("event_id", "workflow_id", "action_index"),
    sa.Index("ix_deliveries_claim", "status", "next_attempt_at"),
    # The people under a claim (open deliveries with a claim id: few), read by every claim.
    sa.Index(
        "ix_deliveries_held",
        "person_key",
        "lease_until",
        postgresql_where=sa.text(HELD),
        sqlite_where=sa.text(HELD),
    ),
)

# Append-only: one row per try, never updated.
attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column(
        "delivery_id",
        RowId,
        sa.ForeignKey("deliveries.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("started_at", Seconds(), nullable=False),
    sa.Column("duration_ms", sa.Double(), nullable=False),
    sa.Column("request", sa.Text(), nullable=True),  # JSON, never credentials
    sa.Column("response_status", sa.Integer(), nullable=True),
    sa.Column("response_body", sa.Text(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
)

workflows = sa.Table(
    "workflows",
    metadata,
    sa.Column("workflow_id", sa.String(128), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("definition", sa.Text(), nullable=False),  # JSON
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("created_at", Seconds(), nullable=False),
    sa.Column("updated_at", Seconds(), nullable=False),
)

customers = sa.Table(
    "customers",
    metadata,
    sa.Column("stripe_customer_id", sa.String(255), primary_key=True),
    sa.Column("email", sa.String(320), nullable=True, index=True),
    sa.Column("name", sa.Text(), nullable=True),
    sa.Column("created", sa.BigInteger(), nullable=True),
    sa.Column("metadata", sa.Text(), nullable=False),  # JSON object
    sa.Column("deleted", sa.Boolean(), nullable=False),
    sa.Column("livemode", sa.Boolean(), nullable=True),
    # event.created (or fetch time) of the stored snapshot: an older one never overwrites.
    sa.Column("watermark", sa.BigInteger(), nullable=False),
    sa.Column("updated_at", Seconds(), nullable=False),
)

meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("value", sa.Text(), nullable=False),
)

# One row per process that claims deliveries, beaten every few seconds (database clock).
workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer(), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("started_at", Seconds(), nullable=False),
    sa.Column("beat_at", Seconds(), nullable=False),
    sa.Column("in_flight", sa.Integer(), nullable=False),  # deliveries claimed, not recorded
)
