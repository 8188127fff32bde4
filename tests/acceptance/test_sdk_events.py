"""The seeds' endpoint: auto-pagination over thousands of events, exact while appending."""

from __future__ import annotations

import threading
from typing import Any, cast

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from openft.domain.entities import EventDraft, EventType
from openft.services.container import Services
from openft.testing.server import Server
from tests.acceptance.helpers import queued_job

TOTAL = 2000


def fill(backdoor: Services, job_id: str, count: int, batch: int = 250) -> None:
    for start in range(0, count, batch):
        backdoor.events.append(
            job_id,
            [
                EventDraft(
                    f"Step {i}/{count}: training loss={1 / i:.4f}",
                    type=EventType.METRICS,
                    data={
                        "step": i,
                        "total_steps": count,
                        "train_loss": 1 / i,
                        "train_mean_token_accuracy": 0.5,
                    },
                )
                for i in range(start + 1, min(start + batch, count) + 1)
            ],
        )


@pytest.fixture(scope="module")
def big_job(server, backdoor: Services) -> str:  # type: ignore[no-untyped-def]
    client = OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)
    job = queued_job(client)
    fill(backdoor, job.id, TOTAL - 3)  # plus created, validating, validated
    return job.id


@pytest.mark.parametrize("limit", [1, None, 1000])
def test_auto_pagination_is_newest_first_without_gap_or_duplicate(
    client: OpenAI, big_job: str, limit: int | None
) -> None:
    kwargs: dict[str, Any] = {} if limit is None else {"limit": limit}
    events = list(client.fine_tuning.jobs.list_events(big_job, **kwargs))
    assert len(events) == TOTAL
    assert len({e.id for e in events}) == TOTAL
    steps = [e.data["step"] for e in events if e.type == "metrics"]  # type: ignore[index]
    assert steps == list(range(TOTAL - 3, 0, -1))
    assert events[-1].message.startswith("Created fine-tuning job")
    first = client.fine_tuning.jobs.list_events(big_job, **kwargs)
    assert len(first.data) == (20 if limit is None else limit) and first.has_more is True


def test_paging_stays_exact_while_events_are_appended(client: OpenAI, backdoor: Services) -> None:
    job = queued_job(client)
    fill(backdoor, job.id, 500)
    stop = threading.Event()

    def keep_appending() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            backdoor.events.append(job.id, [EventDraft(f"live {n}.{k}") for k in range(5)])

    appender = threading.Thread(target=keep_appending)
    appender.start()
    try:
        first = client.fine_tuning.jobs.list_events(job.id, limit=7)
        head = first.data[0].id
        events = list(first)  # later pages run while the appender writes at the head
    finally:
        stop.set()
        appender.join()
    assert len(events) == len({e.id for e in events})
    assert events[0].id == head
    # Everything from the head of the first page back to the oldest event, nothing else.
    older = [e for e in events if not e.message.startswith("live")]
    assert len(older) == 503
    steps = [cast(dict[str, Any], e.data).get("step") for e in older if e.type == "metrics"]
    assert steps == list(range(500, 0, -1))


def test_after_the_oldest_event_is_an_empty_last_page(client: OpenAI, big_job: str) -> None:
    # after=None, as some clients send it: the same as no cursor.
    oldest = client.fine_tuning.jobs.list_events(big_job, limit=1000, after=None)  # type: ignore[arg-type]
    *_, last_page = [oldest, *oldest.iter_pages()]
    oldest_id = last_page.data[-1].id
    empty = client.fine_tuning.jobs.list_events(big_job, after=oldest_id)
    assert empty.data == [] and empty.has_more is False


def test_bad_cursors_and_limits(client: OpenAI, big_job: str) -> None:
    other = queued_job(client)
    foreign = client.fine_tuning.jobs.list_events(other.id, limit=1).data[0].id
    for cursor in (foreign, "ftevent-000000000000000000000000", "garbage"):
        with pytest.raises(openai.BadRequestError) as raised:
            client.fine_tuning.jobs.list_events(big_job, after=cursor)
        assert raised.value.param == "after" and raised.value.code == "invalid_cursor"
    assert client.fine_tuning.jobs.list_events(big_job, limit=0).data == []
    for limit in (-1, 1001):
        with pytest.raises(openai.UnprocessableEntityError) as unprocessable:
            client.fine_tuning.jobs.list_events(big_job, limit=limit)
        assert unprocessable.value.param == "limit"


async def test_async_auto_pagination(async_client: AsyncOpenAI, big_job: str) -> None:
    ids = [e.id async for e in async_client.fine_tuning.jobs.list_events(big_job, limit=300)]
    assert len(ids) == TOTAL == len(set(ids))


def test_the_page_is_the_same_whoever_answers_it(server: Server, big_job: str) -> None:
    """A key's first page goes through the route (which verifies the key); later ones are
    answered before routing (api/events_page.py), and what that does not take (here a
    parameter it does not read) goes through the route again: the same bytes each time,
    counted under the route's template."""
    key = server.new_key("acme")  # not yet seen by the server
    url = f"/fine_tuning/jobs/{big_job}/events"
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}) as h:
        for query in ("limit=7", "", "limit=0", "after={after}&limit=5", "after={after}"):
            after = h.get(url, params={"limit": 3}).json()["data"][-1]["id"]
            path = f"{url}?{query.format(after=after)}"
            answers = [h.get(path), h.get(path), h.get(f"{path}&stream=false")]
            assert [a.status_code for a in answers] == [200, 200, 200]
            assert answers[0].content == answers[1].content == answers[2].content
            assert all(a.headers["content-type"] == "application/json" for a in answers)
            assert all(a.headers["x-request-id"] for a in answers)
        # What it leaves to the route is answered as before.
        assert h.get(f"{url}?after=garbage").json()["error"]["code"] == "invalid_cursor"
        assert h.get(f"{url}?limit=1001").status_code == 422
        assert h.get("/fine_tuning/jobs/ftjob-none/events").status_code == 404
    admin = server.new_key("ops", scope="admin")
    scraped = httpx.get(f"{server.root_url}/metrics", headers={"Authorization": f"Bearer {admin}"})
    template = "/v1/fine_tuning/jobs/{fine_tuning_job_id}/events"
    assert f'openft_http_requests_total{{method="GET",route="{template}",status="200"}}' in (
        scraped.text
    )
