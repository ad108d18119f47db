"""The complete schema: every table module, registered on the one MetaData Alembic compares."""

from __future__ import annotations

from billbridge.store import tables

metadata = tables.metadata

__all__ = ["metadata"]
