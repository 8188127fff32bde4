"""Migrations produce exactly the models' schema, and the server refuses unknown schemas."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from openft.domain.errors import SchemaMismatch
from openft.services.keys import hash_key
from openft.settings import Settings
from openft.store.database import make_admin_engine
from openft.store.migrate import (
    MIGRATIONS,
    current_revision,
    ensure_schema,
    head_revision,
    upgrade,
)
from openft.store.schema import metadata
from openft.wiring import build_services


def test_upgrading_an_empty_database_gives_exactly_the_models_schema(database_url: str) -> None:
    engine = make_admin_engine(database_url)
    if current_revision(engine) is None:
        upgrade(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []
    engine.dispose()


def test_an_empty_database_is_created_and_a_current_one_accepted(database_url: str) -> None:
    engine = make_admin_engine(database_url)
    ensure_schema(engine)
    ensure_schema(engine)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_unknown_or_old_revisions_are_refused_with_the_upgrade_command(database_url: str) -> None:
    engine = make_admin_engine(database_url)
    ensure_schema(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffffffffffff'"))
    with pytest.raises(SchemaMismatch, match="newer openft"):
        ensure_schema(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM alembic_version"))
    with pytest.raises(SchemaMismatch, match="openft db upgrade"):
        ensure_schema(engine)
    engine.dispose()


def test_keys_issued_before_key_ids_get_one_and_keep_working(
    database_url: str, tmp_path: Path
) -> None:
    engine = make_admin_engine(database_url)
    if current_revision(engine) is None:
        upgrade(engine, "0002")
    else:  # PostgreSQL tests start from a migrated template: go back to 0002 first
        with engine.connect() as conn:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = conn
            command.downgrade(config, "0002")
            conn.commit()
    key = "sk-openft-" + "a" * 40
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO projects (id, name, created_at) VALUES ('proj_1', 'old', 1)")
        )
        conn.execute(
            text(
                "INSERT INTO api_keys (key_hash, project_id, scope, created_at)"
                " VALUES (:hash, 'proj_1', 'project', 1)"
            ),
            {"hash": hash_key(key)},
        )
    upgrade(engine)
    engine.dispose()
    services = build_services(Settings(data_dir=tmp_path, database_url=database_url), [])
    try:
        assert services.keys.authenticate(key).project_id == "proj_1"
        (listed,) = services.keys.list()
        assert listed.id.startswith("key_") and len(listed.id) == 28
        assert listed.project_name == "old" and listed.last_used_at is not None
    finally:
        services.close()
