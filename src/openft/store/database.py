"""Engines and transaction scopes for SQLite and PostgreSQL: the dialect differences live here.

SQLite runs in WAL mode with a busy timeout, so readers never block the writer; write
scopes open with ``BEGIN IMMEDIATE`` so a read-then-write never fails half-way with
"database is locked". PostgreSQL uses psycopg 3 and plain transactions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.pool import NullPool, StaticPool

from openft.domain.errors import InvalidRequest, StoreUnavailable
from openft.store.interface import Store, Transaction
from openft.store.transaction import SqlTransaction

SQLITE_BUSY_TIMEOUT_MS = 30_000
POOL_SIZE = 20  # connections a process keeps (and as many more under a burst)


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'openft.db').resolve()}"


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event, not the driver, decide how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get("openft_write", False)
        # Straight to the driver: this runs on every transaction, hot paths included.
        driver = connection.connection.driver_connection
        assert driver is not None
        driver.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(url: str, *, pool_size: int = POOL_SIZE) -> Engine:
    """Create the engine for `url` (a SQLite path URL or a postgresql+psycopg URL)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        if parsed.database in (None, "", ":memory:"):
            # One in-memory database lives in one connection: every checkout shares it
            # (for tests of the services, one thread at a time).
            engine = create_engine(url, connect_args=connect_args, poolclass=StaticPool)
        else:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                url, connect_args=connect_args, pool_size=pool_size, max_overflow=pool_size
            )
        _configure_sqlite(engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(
            parsed, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
        )
    raise ValueError(
        f"unsupported database URL {parsed.render_as_string()!r}: use sqlite or postgresql"
    )


def make_admin_engine(url: str) -> Engine:
    """An engine without pooling, for one-off administrative work (migrations, tests)."""
    engine = make_engine(url)
    return (
        create_engine(engine.url, poolclass=NullPool) if engine.dialect.name != "sqlite" else engine
    )


class Database(Store):
    """Transaction scopes over one engine; database errors are translated once, here."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        # PostgreSQL: a pool of its own whose connections stay in autocommit, for reads of
        # one statement: a round trip less each way than BEGIN … COMMIT, without switching
        # a pooled connection's mode at every checkout (which costs more than it saves).
        self._autocommit = (
            create_engine(
                engine.url,
                isolation_level="AUTOCOMMIT",
                pool_size=POOL_SIZE,
                max_overflow=POOL_SIZE,
                # No pre-ping: it is one more round trip per read. A connection the server
                # dropped fails one read with a 503 (which the SDKs retry), and SQLAlchemy
                # then replaces every pooled connection at once.
                pool_pre_ping=False,
            )
            if self.dialect == "postgresql"
            else None
        )
        # SQLite reads in WAL mode take no lock a writer holds and run in tens of
        # microseconds, less than a hop to a worker thread costs; the API runs them on
        # its event loop. PostgreSQL reads wait on a network, so they go to threads.
        self.inline_reads = self.dialect == "sqlite"

    @contextmanager
    def _scope(self, write: bool, single: bool = False) -> Iterator[Transaction]:
        try:
            if single and self._autocommit is not None:
                with self._autocommit.connect() as conn:
                    yield SqlTransaction(conn)
                return
            with self.engine.connect() as conn:
                if write:
                    conn = conn.execution_options(openft_write=True)
                with conn.begin():
                    yield SqlTransaction(conn)
        except DataError as exc:
            # A value the database cannot hold, from the request (PostgreSQL's text, say,
            # takes no NUL character; SQLite's does): the client's to fix, not a 500.
            reason = str(exc.orig).splitlines()[0] if exc.orig else "invalid value"
            raise InvalidRequest(f"A value in this request cannot be stored: {reason}.") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated or isinstance(exc.orig, OSError):
                raise StoreUnavailable("The database is unavailable; retry shortly.") from exc
            raise

    def read(self) -> AbstractContextManager[Transaction]:
        return self._scope(write=False)

    def read_one(self) -> AbstractContextManager[Transaction]:
        return self._scope(write=False, single=True)

    def write(self) -> AbstractContextManager[Transaction]:
        return self._scope(write=True)

    def dispose(self) -> None:
        self.engine.dispose()
        if self._autocommit is not None:
            self._autocommit.dispose()
