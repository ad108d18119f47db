"""PostgreSQL: the stored webhook bodies and Customer.io exchanges are compressed with lz4.

Revision ID: 0012_compression
Revises: 0011_order
Create Date: 2026-12-03

PostgreSQL compresses a text value over ~2 KB before it stores it, with pglz by default;
a Stripe event is 2 to 20 KB, and pglz was the largest single cost of an ingest in the
database (`bench/README.md`). lz4 compresses about as well for a fraction of the CPU.
Existing values stay as they are (PostgreSQL reads both). A server older than 14, or one
built without lz4, keeps pglz: nothing changes there. SQLite stores text uncompressed.
"""

from __future__ import annotations

from alembic import op

revision = "0012_compression"
down_revision = "0011_order"
branch_labels = None
depends_on = None

COLUMNS = (("events", "payload"), ("attempts", "request"), ("attempts", "response_body"))


def _set_compression(method: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    alters = "".join(
        f"EXECUTE 'ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION {method}'; "
        for table, column in COLUMNS
    )
    op.execute(
        "DO $$ BEGIN"
        " IF current_setting('server_version_num')::int >= 140000 THEN"
        f" BEGIN {alters}"
        # "compression method lz4 not supported": built without lz4.
        " EXCEPTION WHEN feature_not_supported THEN NULL;"
        " END;"
        " END IF;"
        " END $$"
    )


def upgrade() -> None:
    _set_compression("lz4")


def downgrade() -> None:
    _set_compression("pglz")
