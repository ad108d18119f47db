"""Join the billing (0002) and access (0003) branches into one head; no schema change.

Revision ID: 0004_merge
Revises: 0002_billing, 0003_access
Create Date: 2026-11-27
"""

from __future__ import annotations

revision = "0004_merge"
down_revision = ("0002_billing", "0003_access")
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to change: both branches' tables already exist."""


def downgrade() -> None:
    """Nothing to undo."""
