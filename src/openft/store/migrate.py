"""Schema migrations: upgrade a database, and refuse to run on a schema we do not know."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

from openft.domain.errors import SchemaMismatch

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant will do: it serialises concurrent upgrades from several API replicas.
PG_UPGRADE_LOCK = 7_020_417


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to `revision`. Migrations only add; they never drop data."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": PG_UPGRADE_LOCK})
            conn.commit()
        try:
            command.upgrade(_config(conn), revision)
            conn.commit()
        finally:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": PG_UPGRADE_LOCK})
                conn.commit()


def ensure_schema(engine: Engine, *, create_if_empty: bool = True) -> None:
    """Check the schema before serving: create it in an empty database, else refuse to
    start on any revision other than ours, saying which command fixes it."""
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    if current is None and create_if_empty and not inspect(engine).get_table_names():
        upgrade(engine)
        return
    known = {rev.revision for rev in ScriptDirectory.from_config(_config()).walk_revisions()}
    if current in known or current is None:
        raise SchemaMismatch(
            f"The database schema is at revision {current or 'none (tables without a version)'}"
            f", this openft needs {head}. Upgrade it with: openft db upgrade"
            " (with the same --data-dir or --database-url)."
        )
    raise SchemaMismatch(
        f"The database schema is at revision {current}, which this openft does not know "
        f"(it needs {head}); it was written by a newer openft. Run that version instead."
    )
