"""Engines and transaction scopes for SQLite and PostgreSQL: the dialect differences live here.

SQLite runs in WAL mode with a busy timeout, so readers never block the writer; write
scopes open with ``BEGIN IMMEDIATE`` so a read-then-write never fails half-way with
"database is locked". PostgreSQL uses psycopg 3 and plain transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.pool import NullPool, StaticPool

from openft.domain.errors import InvalidRequest, StoreUnavailable
from openft.store.events import (
    EVENTS_CHANNEL,
    EventsRead,
    read_events_async,
    read_events_since_async,
    read_events_since_sqlite,
    read_events_sqlite,
)
from openft.store.interface import Appended, Store, Transaction
from openft.store.transaction import SqlTransaction

log = logging.getLogger(__name__)
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


def _first_line(exc: BaseException) -> str:
    """An error's gist for a one-line log (psycopg's texts run over several lines)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class Database(Store):
    """Transaction scopes over one engine; database errors are translated once, here."""

    def __init__(self, engine: Engine, *, notify: bool = True) -> None:
        """`notify`: whether a commit that appended events tells other processes'
        followers (PostgreSQL); off only to measure what that costs (bench/)."""
        self.engine = engine
        self.dialect = engine.dialect.name
        self._notify = notify and self.dialect == "postgresql"
        # SQLite reads in WAL mode take no lock a writer holds and run in tens of
        # microseconds, less than a hop to a worker thread costs; the API runs them on
        # its event loop. PostgreSQL reads wait on a network, so they go to threads
        # (all but the events page: see `read_events_async`).
        self.inline_reads = self.dialect == "sqlite"
        # PostgreSQL's events pages: psycopg's async pool, opened on the API's event loop
        # at its first page and closed by `aclose`.
        self._pages: AsyncConnectionPool[Any] | None = None
        self._pages_lock = asyncio.Lock()
        self._listeners: list[Callable[[Appended], None]] = []
        self.events_appended = 0
        self._count_lock = threading.Lock()
        self._serial_writes = self.dialect == "sqlite"
        # Reentrant: a write scope opened inside another on one thread waits on SQLite
        # itself, as it did before this lock.
        self._write_lock = threading.RLock()
        self._sqlite_pages = threading.local()  # see `_page_connection`
        self._sqlite_page_connections: list[sqlite3.Connection] = []
        # The PostgreSQL backends of this store's own connections: a notification one of
        # them sent is of a commit this process's listeners were already told of (in
        # full, with its events), so `watch_events` passes it over rather than have every
        # follower's feed read the log again for it.
        self._backends: dict[int, int] = {}  # id of a connection: its backend's pid
        self._own_backends: frozenset[int] = frozenset()  # read without a lock
        if self.dialect == "postgresql":
            event.listen(engine, "connect", self._connected)
            event.listen(engine, "close", self._closed)
            event.listen(engine, "close_detached", self._closed)

    @contextmanager
    def _scope(self, write: bool) -> Iterator[Transaction]:
        # SQLite takes one writer at a time. Its busy handler makes the others sleep and
        # try again (1, 2, 5 … 100 ms naps): a hundred jobs' reports arriving together
        # spent most of their time asleep. This process's writers queue on a lock
        # instead, and each starts the moment the last commits; other processes still
        # meet the busy timeout.
        with self._write_lock if write and self._serial_writes else contextlib.nullcontext():
            yield from self._transaction(write)

    def _transaction(self, write: bool) -> Iterator[Transaction]:
        try:
            with self.engine.connect() as conn:
                if write:
                    conn = conn.execution_options(openft_write=True)
                with conn.begin():
                    tx = SqlTransaction(conn, notify=self._notify)
                    yield tx
                    tx.flush_events()  # reports' events, all in one statement
            if tx.appended:
                with self._count_lock:  # commits end in many threads at once
                    self.events_appended += tx.appended_count
                committed = tx.committed()
                for listener in self._listeners:
                    listener(committed)
        except (DataError, psycopg.DataError) as exc:
            # A value the database cannot hold, from the request (PostgreSQL's text, say,
            # takes no NUL character; SQLite's does): the client's to fix, not a 500. The
            # driver's own error comes from COPY, which goes to psycopg directly.
            cause = exc.orig if isinstance(exc, DataError) else exc
            reason = str(cause).splitlines()[0] if cause else "invalid value"
            raise InvalidRequest(f"A value in this request cannot be stored: {reason}.") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated or isinstance(exc.orig, OSError):
                raise StoreUnavailable("The database is unavailable; retry shortly.") from exc
            raise

    def read(self) -> AbstractContextManager[Transaction]:
        return self._scope(write=False)

    def write(self) -> AbstractContextManager[Transaction]:
        return self._scope(write=True)

    async def read_events_async(
        self, job_id: str, *, before_seq: int | None, limit: int
    ) -> EventsRead:
        if self.inline_reads:  # SQLite: on the loop, as every read (see above)
            conn = self._page_connection()
            if conn is not None:
                return read_events_sqlite(conn, job_id, before_seq=before_seq, limit=limit)
            with self.read() as tx:
                return tx.read_events(job_id, before_seq=before_seq, limit=limit)
        return await read_events_async(
            await self._page_pool(), job_id, before_seq=before_seq, limit=limit
        )

    async def read_events_since_async(
        self, job_id: str, *, after_seq: int, limit: int
    ) -> EventsRead:
        if self.inline_reads:  # SQLite: on the loop, as every read
            conn = self._page_connection()
            if conn is not None:
                return read_events_since_sqlite(conn, job_id, after_seq=after_seq, limit=limit)
            with self.read() as tx:
                return tx.read_events_since(job_id, after_seq=after_seq, limit=limit)
        return await read_events_since_async(
            await self._page_pool(), job_id, after_seq=after_seq, limit=limit
        )

    def _page_connection(self) -> sqlite3.Connection | None:
        """This thread's plain connection to the SQLite file for events pages (None for
        an in-memory database, which lives in the engine's one connection)."""
        conn: sqlite3.Connection | None = getattr(self._sqlite_pages, "conn", None)
        if conn is None:
            path = self.engine.url.database
            if path in (None, "", ":memory:"):
                return None
            # Autocommit (no BEGIN is ever sent): each page is its own read snapshot.
            conn = sqlite3.connect(
                path,
                timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            self._sqlite_pages.conn = conn
            with self._count_lock:
                self._sqlite_page_connections.append(conn)
        return conn

    def _libpq_url(self) -> str:
        """The database's URL as psycopg itself takes it (for its async connections)."""
        return self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    async def _page_pool(self) -> AsyncConnectionPool[Any]:
        if self._pages is None:
            async with self._pages_lock:
                if self._pages is None:
                    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                        self._libpq_url(),
                        # Autocommit: a page is one statement, a snapshot by itself.
                        kwargs={"autocommit": True},
                        min_size=1,
                        max_size=POOL_SIZE,
                        open=False,
                    )
                    await pool.open()
                    self._pages = pool
        return self._pages

    async def watch_events(
        self,
        on_events: Callable[[frozenset[str]], None],
        *,
        on_listening: Callable[[], None] = lambda: None,
    ) -> None:
        if self.dialect != "postgresql":
            await super().watch_events(on_events, on_listening=on_listening)
            return
        url = self._libpq_url()
        delay = 0.5
        lost = False
        while True:  # until cancelled; a lost connection is opened again
            try:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {EVENTS_CHANNEL}")
                    delay = 0.5
                    if lost:  # once per outage, as the loss was
                        log.info("the events notification channel is back")
                        lost = False
                        on_listening()
                    async for notice in conn.notifies():  # the payload: a job's id
                        if notice.pid not in self._own_backends:
                            on_events(frozenset({notice.payload}))
            except psycopg.Error as exc:
                # Terminated, restarted, unreachable: said once, not at every try.
                if not lost:
                    log.warning(
                        "lost the events notification channel (%s); polling until it is back",
                        _first_line(exc),
                    )
                    lost = True
                await asyncio.sleep(delay)
                delay = min(30.0, delay * 2)

    def _connected(self, dbapi_connection: Any, _record: Any) -> None:
        with self._count_lock:
            self._backends[id(dbapi_connection)] = dbapi_connection.info.backend_pid
            self._own_backends = frozenset(self._backends.values())

    def _closed(self, dbapi_connection: Any, _record: Any = None) -> None:
        with self._count_lock:
            self._backends.pop(id(dbapi_connection), None)
            self._own_backends = frozenset(self._backends.values())

    async def aclose(self) -> None:
        if self._pages is not None:
            await self._pages.close()
            self._pages = None

    def on_events(self, listener: Callable[[Appended], None]) -> None:
        self._listeners.append(listener)

    def dispose(self) -> None:
        with self._count_lock:
            for conn in self._sqlite_page_connections:
                conn.close()
            self._sqlite_page_connections.clear()
        self._sqlite_pages = threading.local()
        self.engine.dispose()
