"""Alembic's entry point for Qapten's tables: always run by `qapten.store.schema.upgrade` on a
connection it hands over (``config.attributes["connection"]``), inside that connection's
transaction, so a migration is applied whole or not at all."""

from alembic import context

from qapten.store.schema import VERSION_TABLE
from qapten.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    # Its own name: an application that embeds Qapten keeps its own alembic_version.
    version_table=VERSION_TABLE,
    # SQLite alters a table by copying it; batch mode does that for the migrations.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
