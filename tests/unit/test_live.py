"""Live following on in-memory SQLite: one feed per job whatever the followers, a
follower that falls behind is dropped and told to reconnect, and a feed outlives a
database that fails its reads."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest

from openft.domain.entities import EventDraft, Principal
from openft.domain.errors import StoreUnavailable
from openft.services.container import Services
from openft.services.live import FeedFailed, FollowerTooSlow, LiveEvents
from openft.store.interface import Appended, Store, Transaction
from openft.testing import queued_job


class Flaky(Store):
    """The services' store, whose reads fail while `failure` is set (as a database that
    dropped its connections does); writes go through as ever."""

    def __init__(self, db: Store) -> None:
        self._db = db
        self.inline_reads = db.inline_reads
        self.failure: Exception | None = None
        self.failed_reads = 0
        self.reads = 0
        self.deaf = False  # while set, this process's commits go unheard

    @contextmanager
    def _failing_read(self) -> Iterator[Transaction]:
        if self.failure is not None:
            self.failed_reads += 1
            raise self.failure
        self.reads += 1
        with self._db.read() as tx:
            yield tx

    def read(self) -> AbstractContextManager[Transaction]:
        return self._failing_read()

    def write(self) -> AbstractContextManager[Transaction]:
        return self._db.write()

    def on_events(self, listener: Callable[[Appended], None]) -> None:
        self._db.on_events(lambda appended: None if self.deaf else listener(appended))

    def dispose(self) -> None:
        """The services' store is the fixture's to dispose of."""


async def test_one_feed_serves_every_follower_of_a_job(
    services: Services, principal: Principal
) -> None:
    job_id = queued_job(services, principal)
    live = LiveEvents(services.db, poll_seconds=30, keepalive_seconds=30)
    followers = [live.follow(job_id, 0) for _ in range(3)]
    for follower in followers:
        assert len(await anext(follower)) == 3  # the replay
    waiting = [asyncio.ensure_future(anext(follower)) for follower in followers]
    await asyncio.sleep(0.01)
    assert list(live._feeds) == [job_id] and len(live._feeds[job_id].followers) == 3
    services.events.append(job_id, [EventDraft("news")])  # this process: wakes the feed
    for pending in waiting:
        assert [e.message for e in await pending] == ["news"]
    services.jobs.cancel(principal, job_id)
    for follower in followers:  # each ends once the job has ended and all is out
        assert [e.message async for batch in follower for e in batch] == [
            "Fine-tuning job cancelled"
        ]
    assert live._feeds == {}


async def test_reports_reach_followers_as_committed_and_a_gap_is_read(
    services: Services, principal: Principal
) -> None:
    """A worker's report's events go from its commit to the feed without a read of the
    log; when they do not follow the feed's last event (a commit it did not hear of came
    between), the feed reads the log, and every event arrives once, in order."""
    job_id = queued_job(services, principal)
    assert services.worker.claim("w1") is not None
    db = Flaky(services.db)
    live = LiveEvents(db, poll_seconds=30, keepalive_seconds=30)
    follower = live.follow(job_id, 0)
    replay = await anext(follower)
    waiting = asyncio.ensure_future(anext(follower))
    await asyncio.sleep(0.01)
    reads = db.reads
    services.worker.report(job_id, "w1", 1, [EventDraft("r1"), EventDraft("r2")])
    assert [e.message for e in await waiting] == ["r1", "r2"]
    services.worker.report(job_id, "w1", 2, [EventDraft("r3")])
    assert [e.message for e in await anext(follower)] == ["r3"]
    assert db.reads == reads  # handed from the commit: no read
    db.deaf = True  # as a commit in another process, not yet heard of
    services.events.append(job_id, [EventDraft("unheard")])
    db.deaf = False
    services.worker.report(job_id, "w1", 3, [EventDraft("r4")])
    assert [e.message for e in await anext(follower)] == ["unheard", "r4"]
    assert db.reads == reads + 1
    services.events.append(job_id, [EventDraft("not a report")])  # read: it may end a job
    last = await anext(follower)
    assert [e.message for e in last] == ["not a report"] and db.reads == reads + 2
    assert last[0].seq == replay[-1].seq + 6  # r1 r2 r3 unheard r4, then it: none twice
    await follower.aclose()  # type: ignore[attr-defined]


async def test_a_follower_that_cannot_keep_up_is_told_to_reconnect(
    services: Services, principal: Principal
) -> None:
    job_id = queued_job(services, principal)
    live = LiveEvents(services.db, poll_seconds=30, keepalive_seconds=30, queue_batches=2)
    follower = live.follow(job_id, 0)
    await anext(follower)
    waiting = asyncio.ensure_future(anext(follower))  # subscribed, then reads nothing more
    await asyncio.sleep(0.01)
    queue = next(iter(live._feeds[job_id].followers))
    for batch in range(4):
        services.events.append(job_id, [EventDraft(f"b{batch}")])
        await asyncio.sleep(0.01)
        if batch == 0:
            await waiting  # took b0; now nothing is read: the queue fills
    assert job_id not in live._feeds or queue not in live._feeds[job_id].followers
    with pytest.raises(FollowerTooSlow):
        async for _batch in follower:
            pass


async def test_a_feed_retries_a_failing_database_and_goes_on_from_its_last_event(
    services: Services, principal: Principal, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = queued_job(services, principal)
    caplog.set_level(logging.INFO, logger="openft.services.live")
    db = Flaky(services.db)
    live = LiveEvents(db, poll_seconds=30, keepalive_seconds=30)
    follower = live.follow(job_id, 0)
    assert len(await anext(follower)) == 3  # the replay
    waiting = asyncio.ensure_future(anext(follower))
    await asyncio.sleep(0.01)
    db.failure = StoreUnavailable("The database is unavailable; retry shortly.")
    services.events.append(job_id, [EventDraft("during")])  # wakes the feed: its read fails
    for _ in range(100):  # tried again, and again, by itself
        if db.failed_reads >= 3:
            break
        await asyncio.sleep(0.05)
    assert db.failed_reads >= 3 and not waiting.done() and job_id in live._feeds
    db.failure = None
    assert [e.message for e in await waiting] == ["during"]
    services.jobs.cancel(principal, job_id)
    assert [e.message async for batch in follower for e in batch] == ["Fine-tuning job cancelled"]
    outage = [r.getMessage() for r in caplog.records if r.name == "openft.services.live"]
    assert len(outage) == 2, outage  # one line for the outage, one for its end: no tracebacks
    assert "cannot read the database" in outage[0] and "again after" in outage[1]


async def test_a_follower_replaying_through_an_outage_gets_keep_alives_then_its_events(
    services: Services, principal: Principal
) -> None:
    job_id = queued_job(services, principal)
    db = Flaky(services.db)
    db.failure = StoreUnavailable("The database is unavailable; retry shortly.")
    follower = LiveEvents(db, poll_seconds=30, keepalive_seconds=30).follow(job_id, 0)
    assert await anext(follower) == []  # the stream lives while the database is away
    db.failure = None
    assert len(await anext(follower)) == 3


async def test_a_feed_that_fails_otherwise_tells_its_followers_to_reconnect(
    services: Services, principal: Principal, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = queued_job(services, principal)
    db = Flaky(services.db)
    live = LiveEvents(db, poll_seconds=30, keepalive_seconds=30)
    follower = live.follow(job_id, 0)
    await anext(follower)
    waiting = asyncio.ensure_future(anext(follower))
    await asyncio.sleep(0.01)
    db.failure = RuntimeError("a bug")
    with caplog.at_level(logging.ERROR):
        services.events.append(job_id, [EventDraft("news")])
        with pytest.raises(FeedFailed):  # not keep-alives forever
            await asyncio.wait_for(waiting, 10)
    assert live._feeds == {}
    assert "failed" in caplog.records[-1].getMessage() and caplog.records[-1].exc_info
