"""Following a job's events live, as they are committed: one reader per job per process,
however many followers.

A follower first replays what it has not seen from the store, oldest first, then takes
new events from its job's feed: one task per followed job hands each batch committed past
the last event it delivered to every follower's bounded queue. A feed wakes when this
process commits events for its job (`Store.on_events`): a worker's report's events come
with that news and are handed out as they are, when they follow the feed's last event;
anything else (another process's commit, heard through the store or by polling every
`poll_seconds`; a gap; other events) is read from the store. A lost wake-up delays, never
loses. A follower that falls `queue_batches` behind is dropped
(`FollowerTooSlow`) rather than slowing the others; it reconnects from its last event.

A read the store cannot serve (`StoreUnavailable`: the database restarted, or dropped
the connection) is tried again with a growing delay, from the last event handed out, so
an outage delays a stream and never ends or duplicates it. It is logged once per outage,
not per try.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TypeVar

from openft.domain.entities import Event, EventLog, Page, Principal
from openft.domain.errors import InvalidCursor, StoreUnavailable
from openft.domain.status import TERMINAL
from openft.services.events import job_not_found
from openft.store.interface import Appended, Store

log = logging.getLogger(__name__)
BATCH = 500
# Tries after a failed read: a blip (a dropped connection) is over at the first, an
# outage (a restart) is asked about every few seconds, not hammered.
RETRY_FIRST_SECONDS = 0.1
RETRY_MOST_SECONDS = 5.0
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


class FeedFailed(StreamEnded):
    """The job's feed failed for a reason other than the database's absence (a bug)."""


class _Stopping:
    """What every follower is handed when the server shuts down."""


class _Failed:
    """What a feed that failed unexpectedly hands its followers, so none waits forever."""


class Batch(list[Event]):
    """Events a feed hands to every follower of its job at once. Whatever a follower
    makes of them to send (their frames, compressed) is kept here by the first that
    sends them, for the others: a job's hundred followers encode its batch once."""

    __slots__ = ("encoded",)

    def __init__(self, events: list[Event]) -> None:
        super().__init__(events)
        self.encoded: dict[str, bytes] = {}


_END, _TOO_SLOW, _STOPPING, _FAILED = _End(), _TooSlow(), _Stopping(), _Failed()
Item = Batch | _End | _TooSlow | _Stopping | _Failed


@dataclass
class _Backoff:
    """The delay before the next try of a failed read: doubling up to a ceiling."""

    delay: float = RETRY_FIRST_SECONDS

    def next(self) -> float:
        delay, self.delay = self.delay, min(RETRY_MOST_SECONDS, self.delay * 2)
        return delay

    def reset(self) -> None:
        self.delay = RETRY_FIRST_SECONDS


@dataclass(eq=False)
class _Feed:
    job_id: str
    position: int  # the sequence number of the last event handed to followers
    followers: set[asyncio.Queue[Item]] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # Reports' events this process committed since the feed last ran: handed out as they
    # are when they follow `position`, without a read.
    committed: list[Event] = field(default_factory=list)
    stale: bool = False  # whether the log must be read: what was committed is not all here

    def take_committed(self) -> list[Event] | None:
        """The committed events to hand out next, when they follow the last one handed
        out without a gap and nothing else must be read; else None (read the log)."""
        committed, self.committed = self.committed, []
        if self.stale:
            return None
        committed.sort(key=lambda event: event.seq)  # commits may be heard out of order
        fresh = [event for event in committed if event.seq > self.position]
        expected = range(self.position + 1, self.position + 1 + len(fresh))
        if any(event.seq != seq for event, seq in zip(fresh, expected, strict=True)):
            return None  # a gap: what falls in it was committed elsewhere, or not heard
        return fresh


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
        self._outage_since: float | None = None  # monotonic time of the first failed read
        db.on_events(self._committed)

    @property
    def followers(self) -> int:
        """How many streams follow a job in this process now (a gauge for the metrics)."""
        return len(self._followers)

    # -- wake-ups (from any thread) ----------------------------------------------------

    def _committed(self, appended: Appended) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._hear, appended)

    def _hear(self, appended: Appended) -> None:
        """This process committed events: a report's go to its job's feed as they are."""
        for job_id in appended.jobs:
            feed = self._feeds.get(job_id)
            if feed is not None:
                events = appended.reported.get(job_id)
                if events is None:
                    feed.stale = True
                else:
                    feed.committed.extend(events)
                feed.wake.set()

    def _wake(self, job_ids: frozenset[str]) -> None:
        """Another process committed events for these jobs: their feeds read the log."""
        for job_id in job_ids:
            feed = self._feeds.get(job_id)
            if feed is not None:
                feed.stale = True
                feed.wake.set()

    def _wake_all(self) -> None:
        """The store listens (again): what it did not hear meanwhile is read now."""
        self._wake(frozenset(self._feeds))

    # -- reading -----------------------------------------------------------------------

    async def _read(self, job_id: str, after_seq: int, limit: int = BATCH) -> Read:
        # SQLite answers on the loop, faster than a thread hop costs; PostgreSQL on its
        # async pool, without a thread either.
        found = await self._db.read_events_since_async(job_id, after_seq=after_seq, limit=limit)
        self._recovered()
        return found

    def _failed(self, exc: StoreUnavailable) -> None:
        """A read failed: said once per outage (its tries are many, and all alike)."""
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            cause = str(exc.__cause__ or exc).strip().splitlines() or [type(exc).__name__]
            log.warning("live events cannot read the database (%s); retrying", cause[0])

    def _recovered(self) -> None:
        if self._outage_since is not None:
            lasted = time.monotonic() - self._outage_since
            self._outage_since = None
            log.info("live events read the database again after %.1f s", lasted)

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
        backoff = _Backoff()
        try:
            while True:  # replay from the store until it has nothing more
                if self._stopping:
                    raise ServerStopping("This server is shutting down.")
                try:
                    found = await self._read(job_id, seen)
                except StoreUnavailable as exc:
                    self._failed(exc)
                    await asyncio.sleep(backoff.next())
                    yield []  # a keep-alive: the stream lives while the database is away
                    continue
                backoff.reset()
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
                    # A timeout scope, not wait_for: no task made per item, for every
                    # follower of every batch.
                    async with asyncio.timeout(self.keepalive_seconds):
                        item = await queue.get()
                except TimeoutError:
                    yield []
                    continue
                if isinstance(item, _End):
                    return
                if isinstance(item, _TooSlow):
                    raise FollowerTooSlow("This follower fell behind its job's events.")
                if isinstance(item, _Stopping):
                    raise ServerStopping("This server is shutting down.")
                if isinstance(item, _Failed):
                    raise FeedFailed("This server could not follow the job's events.")
                # Whole, as a rule (its shared encoding goes with it); cut when the
                # replay reached into it.
                fresh = item if item[0].seq > seen else [e for e in item if e.seq > seen]
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
            self._watcher = self._loop.create_task(
                self._db.watch_events(self._wake, on_listening=self._wake_all)
            )

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
        """The one reader of a followed job in this process, while it has followers. A
        failed read is tried again after a growing delay (or sooner, when woken), from
        the feed's position: the last event it handed out."""
        backoff = _Backoff()
        wait = self._poll_seconds
        try:
            while feed.followers:
                try:
                    await asyncio.wait_for(feed.wake.wait(), wait)
                except TimeoutError:
                    feed.stale = True  # a poll: what another process committed, unheard
                feed.wake.clear()
                try:
                    ended = await self._deliver_new(feed)
                except StoreUnavailable as exc:
                    self._failed(exc)
                    feed.stale = True  # the read is tried again
                    wait = backoff.next()
                    continue
                backoff.reset()
                wait = self._poll_seconds
                if ended:
                    self._hand(feed, _END)
                    return
        except Exception:
            # Not the database's absence: a bug. Its followers are told to reconnect
            # (a fresh feed serves them), rather than left with keep-alives forever.
            log.exception("the live feed of fine-tuning job %s failed", feed.job_id)
            self._hand(feed, _FAILED)
        finally:
            if self._feeds.get(feed.job_id) is feed:
                del self._feeds[feed.job_id]

    async def _deliver_new(self, feed: _Feed) -> bool:
        """Hand out what was committed past the feed's position; whether the job ended."""
        committed = feed.take_committed()
        if committed is not None:
            if committed:
                feed.position = committed[-1].seq
                self._hand(feed, Batch(committed))
            return False  # a report ends no job: the events that do are read
        feed.stale = False  # what is committed from here on is heard again
        while True:
            found = await self._read(feed.job_id, feed.position)
            if found is None:
                return True
            log, page = found
            if page.items:
                feed.position = page.items[-1].seq
                self._hand(feed, Batch(page.items))
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
