"""Throwaway PostgreSQL databases for tests and benchmarks."""

from __future__ import annotations

import os
import secrets

from sqlalchemy import Engine, create_engine, make_url, text

POSTGRES_ENV = "OPENFT_TEST_POSTGRES_URL"


def postgres_admin_url() -> str | None:
    """The PostgreSQL server tests may use (None: skip those tests)."""
    return os.environ.get(POSTGRES_ENV) or None


def _admin_engine(url: str) -> Engine:
    return create_engine(
        make_url(url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )


def create_postgres_database(admin_url: str, template: str | None = None) -> str:
    """Create a fresh database on the server of `admin_url` and return its URL."""
    name = f"openft_test_{secrets.token_hex(6)}"
    engine = _admin_engine(admin_url)
    with engine.connect() as conn:
        clause = f" TEMPLATE {template}" if template else ""
        conn.execute(text(f'CREATE DATABASE "{name}"{clause}'))
    engine.dispose()
    return (
        make_url(admin_url)
        .set(drivername="postgresql+psycopg", database=name)
        .render_as_string(hide_password=False)
    )


def drop_postgres_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    engine = _admin_engine(admin_url)
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()
