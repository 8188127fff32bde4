"""Following a job live: server-sent events, replay with Last-Event-ID, other processes."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from openft.domain.entities import EventDraft
from openft.services.container import Services
from openft.testing.server import Server, running_server, wait_until
from tests.acceptance.helpers import queued_job
from tests.conftest import _fresh_database

NO_POLLING = {"OPENFT_STREAM_POLL_SECONDS": "60"}


@dataclass
class Follower:
    """Reads a job's event stream in a thread, as an SSE client would."""

    url: str
    key: str
    last_event_id: str | None = None
    ids: list[str] = field(default_factory=list)
    events: list[dict[str, object]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    done: bool = False
    error: BaseException | None = None

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}", "Accept": "text/event-stream"}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        try:
            with httpx.stream("GET", self.url, headers=headers, timeout=60) as response:
                assert response.status_code == 200, response.read()
                assert response.headers["content-type"].startswith("text/event-stream")
                for frame in frames(response.iter_lines()):
                    if frame.get("data") == "[DONE]":
                        self.done = True
                    elif "data" in frame:
                        self.ids.append(frame["id"])
                        self.events.append(json.loads(frame["data"]))
                    else:
                        self.comments.append(frame.get("comment", ""))
        except httpx.HTTPError as exc:  # the server went away mid-stream
            self.error = exc

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        return thread


def frames(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    frame: dict[str, str] = {}
    for line in lines:
        if not line:
            if frame:
                yield frame
            frame = {}
        elif line.startswith(":"):
            frame["comment"] = line[1:].strip()
        else:
            name, _, value = line.partition(":")
            frame[name] = value.removeprefix(" ")


def listed_oldest_first(client: OpenAI, job_id: str) -> list[str]:
    return [e.id for e in reversed(list(client.fine_tuning.jobs.list_events(job_id, limit=100)))]


def events_url(server: Server, job_id: str) -> str:
    return f"{server.base_url}/fine_tuning/jobs/{job_id}/events?stream=true"


def test_a_follower_gets_every_event_then_done(
    client: OpenAI, server: Server, backdoor: Services
) -> None:
    job = queued_job(client)
    follower = Follower(events_url(server, job.id), server.key)
    thread = follower.start()
    wait_until(lambda: len(follower.ids) >= 3, 10, 0.05, "the replay")
    for batch in range(10):
        backdoor.events.append(job.id, [EventDraft(f"live {batch}.{n}") for n in range(30)])
    client.fine_tuning.jobs.cancel(job.id)
    thread.join(30)
    assert follower.done and not thread.is_alive()
    assert follower.ids == listed_oldest_first(client, job.id)
    assert len(follower.ids) == 3 + 300 + 1
    assert follower.events[-1]["message"] == "Fine-tuning job cancelled"
    assert follower.events[0]["object"] == "fine_tuning.job.event"


def test_a_stream_is_gzipped_for_a_client_that_takes_it_and_says_the_same(
    client: OpenAI, server: Server
) -> None:
    job = queued_job(client)
    client.fine_tuning.jobs.cancel(job.id)  # ended: each stream replays, then [DONE]
    bodies = {}
    for encoding in ("gzip", "identity"):
        headers = {"Authorization": f"Bearer {server.key}", "Accept-Encoding": encoding}
        with httpx.stream("GET", events_url(server, job.id), headers=headers) as response:
            assert response.headers.get("content-encoding") == (
                "gzip" if encoding == "gzip" else None
            )
            assert response.headers["vary"] == "accept-encoding"
            raw = b"".join(response.iter_raw())
            bodies[encoding] = gzip.decompress(raw) if encoding == "gzip" else raw
    assert bodies["gzip"] == bodies["identity"]
    assert bodies["gzip"].endswith(b"data: [DONE]\n\n")
    assert bodies["gzip"].count(b"\nid: ") + 1 == len(listed_oldest_first(client, job.id))


def test_streams_refuse_what_they_cannot_follow(client: OpenAI, server: Server) -> None:
    job = queued_job(client)
    headers = {"Authorization": f"Bearer {server.key}"}
    unknown = httpx.get(events_url(server, "ftjob-nope"), headers=headers)
    assert unknown.status_code == 404 and unknown.json()["error"]["param"]
    bad_cursor = httpx.get(
        events_url(server, job.id), headers={**headers, "Last-Event-ID": "ftevent-nope"}
    )
    assert bad_cursor.status_code == 400
    assert bad_cursor.json()["error"]["param"] == "Last-Event-ID"


@pytest.fixture
def sqlite_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from _fresh_database("sqlite", tmp_path, request)


@pytest.fixture
def postgres_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from _fresh_database("postgres", tmp_path, request)


def test_a_follower_reconnects_across_a_restart_without_gap_or_duplicate(
    sqlite_database: str, tmp_path: Path
) -> None:
    url = sqlite_database
    with running_server(url, tmp_path, "tiny=/nonexistent/tiny") as first:
        client = OpenAI(base_url=first.base_url, api_key=first.key, max_retries=0)
        job = queued_job(client)
        follower = Follower(events_url(first, job.id), first.key)
        thread = follower.start()
        wait_until(lambda: len(follower.ids) >= 3, 10, 0.05, "the replay")
    thread.join(30)  # the server stopped under it, and ended the stream first
    assert not follower.done
    assert "shutting down" in follower.comments[-1], follower.comments
    seen = list(follower.ids)
    with running_server(url, tmp_path, "tiny=/nonexistent/tiny") as second:
        client = OpenAI(base_url=second.base_url, api_key=second.key, max_retries=0)
        client.fine_tuning.jobs.pause(job.id)  # written while nobody followed
        again = Follower(events_url(second, job.id), second.key, last_event_id=seen[-1])
        thread = again.start()
        wait_until(lambda: again.ids, 10, 0.05, "the replay after the restart")
        client.fine_tuning.jobs.cancel(job.id)
        thread.join(30)
        assert again.done
        assert seen + again.ids == listed_oldest_first(client, job.id)


@pytest.mark.postgres
def test_a_follower_on_one_process_sees_what_another_wrote(
    postgres_database: str, tmp_path: Path
) -> None:
    url = postgres_database
    # The follower's server polls once a minute: only a notification can wake it in time.
    with (
        running_server(url, tmp_path / "a", "tiny=/nonexistent/tiny", env=NO_POLLING) as one,
        running_server(url, tmp_path / "b", "tiny=/nonexistent/tiny") as other,
    ):
        client = OpenAI(base_url=other.base_url, api_key=other.key, max_retries=0)
        job = queued_job(client)
        follower = Follower(events_url(one, job.id), one.key)
        thread = follower.start()
        wait_until(lambda: len(follower.ids) >= 3, 10, 0.05, "the replay")
        client.fine_tuning.jobs.cancel(job.id)  # through the other process
        thread.join(30)
        assert follower.done
        assert follower.ids == listed_oldest_first(client, job.id)
