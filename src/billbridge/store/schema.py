"""The complete schema: every table module, registered on the one MetaData Alembic compares."""

from __future__ import annotations

import billbridge.store.tables_billing
import billbridge.store.tables_fleet  # noqa: F401 - registers its tables
from billbridge.store import (
    tables,
    tables_access,  # noqa: F401 - registers its tables
    tables_privacy,  # noqa: F401 - registers its tables
    tables_throttle,  # noqa: F401 - registers its tables
)

metadata = tables.metadata

__all__ = ["metadata"]
