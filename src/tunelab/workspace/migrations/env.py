"""Alembic environment: migrations run on the connection `tunelab.workspace.db.migrate` passes in."""

from alembic import context

from tunelab.workspace.orm import Base

connection = context.config.attributes["connection"]
# render_as_batch: SQLite can only ALTER a table by copying it; batch mode does that for us.
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                  compare_type=True)
with context.begin_transaction():
    context.run_migrations()
