"""Tables a fleet of processes shares: the Customer.io rate limits (on the one MetaData)."""

from __future__ import annotations

import sqlalchemy as sa

from billbridge.store.tables import Seconds, metadata

# One row per shared rate (`app`, `broadcast`, `track`): `next_at` is the database-clock
# time from which the next call may go (a GCRA "theoretical arrival time"); each take moves
# it on by the calls it reserves. `taken_at` and `granted` describe the last take, so one
# UPDATE ... RETURNING tells the taker its slot (RETURNING can read only this table).
rate_limits = sa.Table(
    "rate_limits",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("next_at", Seconds(), nullable=False),
    sa.Column("taken_at", Seconds(), nullable=False),
    sa.Column("granted", sa.Boolean(), nullable=False),
)

FLEET_TABLES = (rate_limits,)
