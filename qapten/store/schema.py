"""Bringing a database's Qapten tables to the current schema.

A new database gets the tables whole (``create_all``) and is stamped at the current revision; a
database made by an earlier release is upgraded in place by the Alembic migrations beside this
module. A database made before migrations existed (it has the tables but no version row) is at
the first revision. Everything happens in the caller's write transaction: on PostgreSQL, servers
and workers that start together take turns, and a failed migration leaves nothing half-done.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Column, MetaData, String, Table, inspect, select
from sqlalchemy.engine import Connection

from qapten.errors import ConfigurationError
from qapten.store.tables import SCHEMA_REVISION, metadata

VERSION_TABLE = "qapten_alembic_version"
FIRST_REVISION = "0001"
MIGRATIONS = Path(__file__).with_name("migrations")

_version = Table(VERSION_TABLE, MetaData(), Column("version_num", String(32), primary_key=True))


def current_revision(conn: Connection) -> str | None:
    """The revision the database is at; None for a database without Qapten's tables."""
    tables = set(inspect(conn).get_table_names())
    if VERSION_TABLE in tables:
        return conn.execute(select(_version.c.version_num)).scalar_one_or_none()
    if "qapten_runs" in tables:
        return FIRST_REVISION  # made by create_all before migrations existed
    return None


def upgrade(conn: Connection) -> None:
    """Create or upgrade Qapten's tables on `conn` (inside its transaction)."""
    if conn.dialect.name == "postgresql":
        _make_search_path_schema(conn)
    revision = current_revision(conn)
    if revision == SCHEMA_REVISION:
        return
    if revision is None:
        metadata.create_all(conn)
        _version.create(conn)
        conn.execute(_version.insert().values(version_num=SCHEMA_REVISION))
        return
    migrate(conn, SCHEMA_REVISION, stamp=revision)


def migrate(conn: Connection, target: str, *, stamp: str | None = None) -> None:
    """Run the migrations up to `target` (first recording `stamp` as the current revision, for
    a database that has no version row yet)."""
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
    if stamp is not None and stamp not in known:
        msg = (
            f"the database's Qapten tables are at revision {stamp}, which this version of "
            f"Qapten does not know (its newest is {SCHEMA_REVISION}): upgrade Qapten"
        )
        raise ConfigurationError(msg)
    try:
        if stamp is not None and VERSION_TABLE not in inspect(conn).get_table_names():
            command.stamp(config, stamp)
        command.upgrade(config, target)
    except CommandError as exc:
        raise ConfigurationError(f"cannot migrate the database: {exc}") from exc


def _make_search_path_schema(conn: Connection) -> None:
    # A team's connections name their schema in the search path (qapten.teams); on first use
    # it does not exist yet, and PostgreSQL then has no current schema to create tables in.
    if conn.exec_driver_sql("SELECT current_schema()").scalar() is not None:
        return
    path = str(conn.exec_driver_sql("SHOW search_path").scalar())
    first = path.split(",")[0].strip().strip('"')
    if first and first != "$user":
        quoted = first.replace('"', '""')
        conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{quoted}"')
