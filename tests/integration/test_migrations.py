"""Migrations produce exactly the models' schema, and the server refuses unknown schemas."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from openft.domain.errors import SchemaMismatch
from openft.store.database import make_admin_engine
from openft.store.migrate import current_revision, ensure_schema, head_revision, upgrade
from openft.store.schema import metadata


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
