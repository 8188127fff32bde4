"""Readiness for a load balancer: `/readyz` is 503 while the database or the blob store
cannot be reached, naming which, and 200 again once it can; `/healthz` only says the
process lives."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, make_url, text

from openft.testing.databases import postgres_admin_url
from openft.testing.s3 import unreachable_bucket
from openft.testing.server import running_server, wait_until
from tests.conftest import _fresh_database


def probe(root: str) -> tuple[httpx.Response, httpx.Response]:
    return httpx.get(f"{root}/healthz", timeout=30), httpx.get(f"{root}/readyz", timeout=30)


def set_connections(admin: str, database: str, allowed: bool) -> None:
    engine = create_engine(
        make_url(admin).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as conn:
        conn.execute(
            text(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}')
        )
        if not allowed:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :db"),
                {"db": database},
            )
    engine.dispose()


@pytest.mark.postgres
def test_readyz_is_503_while_the_database_is_unreachable(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    for url in _fresh_database("postgres", tmp_path, request):
        admin = postgres_admin_url()
        assert admin is not None
        database = make_url(url).database
        assert database is not None
        with running_server(url, tmp_path) as server:
            health, ready = probe(server.root_url)
            assert health.json() == {"status": "ok"}
            assert ready.status_code == 200
            assert ready.json() == {
                "status": "ready",
                "checks": {"database": "ok", "blob_store": "ok"},
            }
            set_connections(admin, database, allowed=False)
            try:
                health, ready = probe(server.root_url)
                assert health.status_code == 200  # alive: restarting it would not help
                assert ready.status_code == 503
                body = ready.json()
                assert body["status"] == "unavailable"
                assert body["checks"]["database"] != "ok"
                assert body["checks"]["blob_store"] == "ok"
            finally:
                set_connections(admin, database, allowed=True)
            wait_until(lambda: probe(server.root_url)[1].status_code == 200, 30, what="ready")


def test_readyz_is_503_while_the_blob_store_is_unreachable(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    down = unreachable_bucket()
    for url in _fresh_database("sqlite", tmp_path, request):
        with running_server(url, tmp_path, env=down) as server:
            health, ready = probe(server.root_url)
            assert health.status_code == 200 and ready.status_code == 503
            checks = ready.json()["checks"]
            assert checks["database"] == "ok"
            assert "s3://openft-down/x" in checks["blob_store"]
