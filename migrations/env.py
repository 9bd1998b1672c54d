"""Alembic environment: runs on the connection the caller hands in.

The daemon's writer owns the only read-write connection to a live database
(docs/design.md, "One writer connection"), so migrations run on that connection rather than
opening one of their own.
"""

from alembic import context

from auditd_lite.storage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("auditd-lite migrations run through auditd_lite.storage.store, not the alembic CLI")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
