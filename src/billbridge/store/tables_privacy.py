"""The record of erasures (on the one MetaData): what was erased, by whom, never the data."""

from __future__ import annotations

import sqlalchemy as sa

from billbridge.store.tables import RowId, Seconds, metadata

# One row per `billbridge erase` / `POST /api/customers/{id}/erase`. `matched_hash` is the
# SHA-256 of what was asked for (the customer id, or the lower-cased email): it answers
# "was X erased?" without keeping X. The Customer.io action's delivery status is read from
# the synthetic events named in `cio_event_ids` (JSON list).
erasures = sa.Table(
    "erasures",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column("created_at", Seconds(), nullable=False),
    sa.Column("matched_by", sa.String(16), nullable=False),  # "customer" | "email"
    sa.Column("matched_hash", sa.String(64), nullable=False),
    sa.Column("customers", sa.Integer(), nullable=False),  # customers erased
    sa.Column("events", sa.Integer(), nullable=False),  # events whose data was removed
    sa.Column("requested_by", sa.String(255), nullable=False),  # user or API token name
    sa.Column("cio_action", sa.String(16), nullable=False),  # delete | suppress | none
    sa.Column("cio_event_ids", sa.Text(), nullable=False),
)

PRIVACY_TABLES = (erasures,)
