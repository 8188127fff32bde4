"""Live following on in-memory SQLite: one feed per job whatever the followers, and a
follower that falls behind is dropped and told to reconnect."""

from __future__ import annotations

import asyncio

import pytest

from openft.domain.entities import EventDraft, Principal
from openft.services.container import Services
from openft.services.live import FollowerTooSlow, LiveEvents
from openft.testing import queued_job


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
