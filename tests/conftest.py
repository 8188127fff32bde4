"""Fixtures: every store test runs on SQLite and on PostgreSQL (a fresh database each)."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from openft.domain.entities import BaseModel, KeyScope, Principal
from openft.services.container import Services
from openft.settings import Settings
from openft.store.database import make_admin_engine, sqlite_url
from openft.store.migrate import upgrade
from openft.testing.databases import (
    create_postgres_database,
    drop_postgres_database,
    postgres_admin_url,
)
from openft.testing.s3 import S3Server, seaweed
from openft.wiring import build_services

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
SESSION_ENV = "OPENFT_TEST_SESSION"


def _processes_of(session: str) -> list[tuple[int, str]]:
    """Live processes (pid, command) that inherited this test session's marker."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if f"{SESSION_ENV}={session}".encode() in environ:
            found.append((int(entry.name), command))
    return found


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_tests() -> Iterator[None]:
    """Every process a test starts inherits a marker; any still running when the tests
    end is killed, and the run fails naming it."""
    session = secrets.token_hex(8)
    os.environ[SESSION_ENV] = session
    yield
    leftovers = _processes_of(session)
    for pid, _command in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"processes left running by the tests: {leftovers}"


TINY = BaseModel("tiny", "/nonexistent/tiny-model")


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A migrated database that each test's fresh database is copied from."""
    admin = postgres_admin_url()
    if admin is None:
        pytest.skip(
            "PostgreSQL tests need OPENFT_TEST_POSTGRES_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"
        )
    url = create_postgres_database(admin)
    engine = make_admin_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    drop_postgres_database(admin, url)


def _fresh_database(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """Yield the URL of an empty database of `kind`, dropped afterwards."""
    if kind == "sqlite":
        yield sqlite_url(tmp_path)
        return
    template = request.getfixturevalue("postgres_template")
    admin = postgres_admin_url()
    assert admin is not None
    from sqlalchemy import make_url

    url = create_postgres_database(admin, template=make_url(template).database)
    yield url
    drop_postgres_database(admin, url)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from _fresh_database(request.param, tmp_path, request)


@pytest.fixture
def services(database_url: str, tmp_path: Path) -> Iterator[Services]:
    settings = Settings(data_dir=tmp_path, database_url=database_url)
    built = build_services(settings, [TINY])
    yield built
    built.close()


@pytest.fixture
def principal(services: Services) -> Principal:
    _key, record = services.keys.create("acme", KeyScope.PROJECT)
    return record.principal


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 server (SeaweedFS) on loopback for the whole session; each test takes a
    prefix of its own in its bucket (`s3_url`)."""
    with seaweed(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def s3_url(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """`s3://BUCKET/PREFIX`, a prefix for this test alone, with the AWS variables that
    reach the server set for this process (and the servers it starts)."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server.url(f"test-{secrets.token_hex(6)}")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random causal LM and tokenizer, built locally once per test session."""
    from openft.testing.data import toy_chat_file
    from openft.training.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), [toy_chat_file().decode()])
