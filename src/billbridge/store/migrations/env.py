"""Alembic environment: migrates the connection that `Store.migrate()` hands over."""

from __future__ import annotations

from alembic import context

from billbridge.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "Billbridge migrations run on a store connection: use `billbridge migrate` "
        "or Store.migrate(), not the alembic command line"
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things: later revisions use batch mode (copy and swap).
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)

with context.begin_transaction():
    context.run_migrations()
