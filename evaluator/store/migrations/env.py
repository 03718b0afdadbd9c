"""Alembic's entry point for pricer's store: run with the connection `pricer.evaluator.store.migrate` passes."""

from alembic import context

from pricer.evaluator.store.schema import Base

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite alters a table by copying it; PostgreSQL alters in place
)
with context.begin_transaction():
    context.run_migrations()
