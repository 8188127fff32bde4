"""Following a job's events live, as they are committed: one reader per job per process,
however many followers.

A follower first replays what it has not seen from the store, oldest first, then takes
new events from its job's feed: one task per followed job reads what was committed past
the last event it delivered and hands each batch to every follower's bounded queue. A
feed wakes when this process commits events for its job (`Store.on_events`), and polls
every `poll_seconds` besides, so events written by another process arrive too: a lost
wake-up delays, never loses. A follower that falls `queue_batches` behind is dropped
(`FollowerTooSlow`) rather than slowing the others; it reconnects from its last event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TypeVar

from openft.domain.entities import Event, EventLog, Page, Principal
from openft.domain.errors import InvalidCursor
from openft.domain.status import TERMINAL
from openft.services.events import job_not_found
from openft.store.interface import Store

BATCH = 500
T = TypeVar("T")
Read = tuple[EventLog, Page[Event]] | None


class StreamEnded(Exception):
    """A follow ended before its job did: the follower must reconnect with the last
    event it received. Raised in the middle of a stream, so never rendered as an HTTP
    error (not an `OpenFTError`)."""


class FollowerTooSlow(StreamEnded):
    """The follower fell too far behind its job's feed."""


class ServerStopping(StreamEnded):
    """This server process is shutting down (another one, or its restart, takes over)."""


class _End:
    """What a feed hands its followers when the job has ended and all its events are out."""


class _TooSlow:
    """What a feed hands a follower it dropped for falling behind."""


class _Stopping:
    """What every follower is handed when the server shuts down."""


_END, _TOO_SLOW, _STOPPING = _End(), _TooSlow(), _Stopping()
Item = list[Event] | _End | _TooSlow | _Stopping


@dataclass(eq=False)
class _Feed:
    job_id: str
    position: int  # the sequence number of the last event handed to followers
    followers: set[asyncio.Queue[Item]] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class LiveEvents:
    def __init__(
        self,
        db: Store,
        *,
        poll_seconds: float = 1.0,
        keepalive_seconds: float = 15.0,
        queue_batches: int = 256,
    ) -> None:
        self._db = db
        self._poll_seconds = poll_seconds
        self.keepalive_seconds = keepalive_seconds
        self._queue_batches = queue_batches
        self._feeds: dict[str, _Feed] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._followers: set[asyncio.Queue[Item]] = set()
        self._stopping = False
        db.on_events(self._committed)

    # -- wake-ups (from any thread) ----------------------------------------------------

    def _committed(self, job_ids: frozenset[str]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake, job_ids)

    def _wake(self, job_ids: frozenset[str]) -> None:
        for job_id in job_ids:
            feed = self._feeds.get(job_id)
            if feed is not None:
                feed.wake.set()

    # -- reading -----------------------------------------------------------------------

    async def _read(self, job_id: str, after_seq: int, limit: int = BATCH) -> Read:
        def read() -> Read:
            with self._db.read() as tx:
                return tx.read_events_since(job_id, after_seq=after_seq, limit=limit)

        # SQLite answers faster than a thread hop costs; a network database waits.
        return read() if self._db.inline_reads else await asyncio.to_thread(read)

    async def start(self, principal: Principal, job_id: str, last_event_id: str | None) -> int:
        """Check that the follower may follow (its job, its cursor) before a byte of the
        stream goes out; the sequence number it has seen up to (0: none)."""
        found = await self._read(job_id, 0, limit=0)  # the job's log, not its events
        if found is None or found[0].project_id != principal.project_id:
            raise job_not_found(job_id)
        if last_event_id is None:
            return 0
        seen = found[0].seq_of(last_event_id)
        if seen is None:
            raise InvalidCursor(
                f"Invalid Last-Event-ID {last_event_id!r}: not an event of fine-tuning job "
                f"{job_id}.",
                param="Last-Event-ID",
            )
        return seen

    async def follow(self, job_id: str, after_seq: int) -> AsyncIterator[list[Event]]:
        """The job's events after `after_seq`, oldest first, in batches, until the job has
        ended and all are out; an empty batch when nothing came for `keepalive_seconds`.
        Raises `FollowerTooSlow` when it fell behind."""
        self._listen()
        queue: asyncio.Queue[Item] = asyncio.Queue(self._queue_batches)
        self._followers.add(queue)
        feed: _Feed | None = None
        seen = after_seq
        try:
            while True:  # replay from the store until it has nothing more
                if self._stopping:
                    raise ServerStopping("This server is shutting down.")
                found = await self._read(job_id, seen)
                if found is None:
                    return
                log, page = found
                if page.items:
                    seen = page.items[-1].seq
                    yield page.items
                if page.has_more:
                    continue
                if log.status in TERMINAL and seen >= log.last_seq:
                    return
                if feed is None:  # join the feed, then read once more: nothing falls between
                    feed = self._join(job_id, log.last_seq, queue)
                    continue
                break
            while True:  # then live, from the feed
                try:
                    item = await asyncio.wait_for(queue.get(), self.keepalive_seconds)
                except TimeoutError:
                    yield []
                    continue
                if isinstance(item, _End):
                    return
                if isinstance(item, _TooSlow):
                    raise FollowerTooSlow("This follower fell behind its job's events.")
                if isinstance(item, _Stopping):
                    raise ServerStopping("This server is shutting down.")
                fresh = [event for event in item if event.seq > seen]
                if fresh:
                    seen = fresh[-1].seq
                    yield fresh
        finally:
            self._followers.discard(queue)
            if feed is not None:
                feed.followers.discard(queue)

    def stop_streams(self) -> None:
        """End every follow in this process, so that a shutdown need not wait for
        streams that never end by themselves. Callable from any thread (a signal)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._stop)

    def _stop(self) -> None:
        self._stopping = True
        for queue in self._followers:
            _drain(queue)
            queue.put_nowait(_STOPPING)

    def _listen(self) -> None:
        """On the first follower: hear of other processes' commits from the store."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._watcher = self._loop.create_task(self._db.watch_events(self._wake))

    async def aclose(self) -> None:
        """Stop listening (the app's shutdown, before its event loop ends)."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        self._loop = self._watcher = None

    # -- feeds -------------------------------------------------------------------------

    def _join(self, job_id: str, position: int, queue: asyncio.Queue[Item]) -> _Feed:
        feed = self._feeds.get(job_id)
        if feed is None:
            feed = self._feeds[job_id] = _Feed(job_id, position)
            task = asyncio.get_running_loop().create_task(self._run(feed))
            self._tasks.add(task)  # held, so it is not collected while it runs
            task.add_done_callback(self._tasks.discard)
        feed.followers.add(queue)
        return feed

    async def _run(self, feed: _Feed) -> None:
        """The one reader of a followed job in this process, while it has followers."""
        try:
            while feed.followers:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(feed.wake.wait(), self._poll_seconds)
                feed.wake.clear()
                ended = await self._deliver_new(feed)
                if ended:
                    self._hand(feed, _END)
                    return
        finally:
            if self._feeds.get(feed.job_id) is feed:
                del self._feeds[feed.job_id]

    async def _deliver_new(self, feed: _Feed) -> bool:
        """Hand out what was committed past the feed's position; whether the job ended."""
        while True:
            found = await self._read(feed.job_id, feed.position)
            if found is None:
                return True
            log, page = found
            if page.items:
                feed.position = page.items[-1].seq
                self._hand(feed, page.items)
            if not page.has_more:
                return log.status in TERMINAL and feed.position >= log.last_seq

    def _hand(self, feed: _Feed, item: Item) -> None:
        for queue in list(feed.followers):
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:
                # It fell behind: drop what it has queued and tell it, so that a slow
                # follower never holds the others back, nor memory.
                feed.followers.discard(queue)
                _drain(queue)
                queue.put_nowait(_TOO_SLOW)


def _drain(queue: asyncio.Queue[T]) -> None:
    with contextlib.suppress(asyncio.QueueEmpty):
        while True:
            queue.get_nowait()
