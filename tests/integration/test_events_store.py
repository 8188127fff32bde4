"""The event log on both databases: batched appends, exact keyset pages, cursors."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, make_url, text

from openft.domain.entities import EventDraft, EventLevel, EventType, Principal
from openft.domain.errors import InvalidCursor, NotFound, StoreUnavailable
from openft.services.container import Services
from openft.services.jobs import NewJob
from openft.settings import Settings
from openft.testing.data import chat_file
from openft.testing.databases import (
    create_postgres_database,
    drop_postgres_database,
    postgres_admin_url,
)
from openft.wiring import build_services
from tests.conftest import TINY


def make_job(services: Services, principal: Principal) -> str:
    upload = services.files.upload(principal, "train.jsonl", "fine-tune", [chat_file()])
    return services.jobs.create(principal, NewJob(model="tiny", training_file=upload.id)).id


def page_all(services: Services, principal: Principal, job_id: str, limit: int) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        page = services.events.list(principal, job_id, after=after, limit=limit)
        seen += [e.id for e in page.items]
        if not page.has_more:
            return seen
        after = page.items[-1].id


def test_append_assigns_gap_free_sequences_and_keeps_data(
    services: Services, principal: Principal
) -> None:
    job_id = make_job(services, principal)
    metrics = EventDraft(
        "Step 1/10: training loss=1.50",
        type=EventType.METRICS,
        data={"step": 1, "total_steps": 10, "train_loss": 1.5, "train_mean_token_accuracy": 0.25},
    )
    appended = services.events.append(
        job_id, [metrics, EventDraft("warned", level=EventLevel.WARN)]
    )
    assert [e.seq for e in appended] == [3, 4]  # created + validating came first
    page = services.events.list(principal, job_id, limit=2)
    assert [e.message for e in page.items] == ["warned", "Step 1/10: training loss=1.50"]
    assert page.items[1].data == metrics.data and page.items[1].type is EventType.METRICS
    assert page.items[0].data == {} and page.items[0].level is EventLevel.WARN
    assert page.has_more


def test_paging_with_a_cursor_is_exact_and_ends_empty(
    services: Services, principal: Principal
) -> None:
    job_id = make_job(services, principal)
    services.events.append(job_id, [EventDraft(f"e{i}") for i in range(48)])
    everything = services.events.list(principal, job_id, limit=1000).items
    assert len(everything) == 50
    assert [e.seq for e in everything] == list(range(50, 0, -1))
    oldest = everything[-1].id
    empty = services.events.list(principal, job_id, after=oldest, limit=20)
    assert empty.items == [] and empty.has_more is False
    zero = services.events.list(principal, job_id, limit=0)
    assert zero.items == [] and zero.has_more is True


def test_cursors_of_other_jobs_and_unknown_ids_are_refused(
    services: Services, principal: Principal
) -> None:
    first, second = make_job(services, principal), make_job(services, principal)
    other_cursor = services.events.list(principal, second, limit=1).items[0].id
    for bad in [other_cursor, "ftevent-unknown", "nonsense", other_cursor[:-8] + "zzzzzzzz"]:
        with pytest.raises(InvalidCursor) as raised:
            services.events.list(principal, first, after=bad)
        assert raised.value.param == "after"
    with pytest.raises(NotFound):
        services.events.list(principal, "ftjob-doesnotexist")


def test_concurrent_appenders_never_collide(services: Services, principal: Principal) -> None:
    job_id = make_job(services, principal)

    def append(worker: int) -> None:
        for batch in range(10):
            services.events.append(
                job_id, [EventDraft(f"w{worker} b{batch} e{i}") for i in range(5)]
            )

    threads = [threading.Thread(target=append, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    events = services.events.list(principal, job_id, limit=1000).items
    assert [e.seq for e in events] == list(range(202, 0, -1))
    assert len({e.message for e in events}) == 202


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(st.integers(min_value=1, max_value=40), max_size=6), limit=st.integers(1, 30)
)
def test_paging_invariants(
    services: Services, principal: Principal, batches: list[int], limit: int
) -> None:
    """Any sequence of batches, any page size: newest first, no gap, no duplicate,
    every page but the last full, and has_more false exactly on the last."""
    job_id = make_job(services, principal)
    for size in batches:
        services.events.append(job_id, [EventDraft("x")] * size)
    total = 2 + sum(batches)
    pages = []
    after = None
    while True:
        page = services.events.list(principal, job_id, after=after, limit=limit)
        pages.append(page)
        if not page.has_more:
            break
        after = page.items[-1].id
    seqs = [e.seq for page in pages for e in page.items]
    assert seqs == list(range(total, 0, -1))
    assert all(len(page.items) == limit for page in pages[:-1])
    assert 0 < len(pages[-1].items) <= limit


@pytest.mark.postgres
async def test_a_page_read_on_a_dropped_connection_is_unavailable_once_then_served(
    postgres_template: str, tmp_path: Path
) -> None:
    """Pages are read through SQLAlchemy (services) and through psycopg's async pool (the
    API): a connection the server dropped costs at most one 503, then is replaced."""
    admin = postgres_admin_url()
    assert admin is not None
    url = create_postgres_database(admin, template=make_url(postgres_template).database)
    services = build_services(Settings(data_dir=tmp_path, database_url=url), [TINY])
    try:
        _key, record = services.keys.create("acme")
        job_id = make_job(services, record.principal)

        async def both() -> list[int]:
            sync = services.events.list(record.principal, job_id)
            on_loop = await services.events.list_async(record.principal, job_id)
            return [len(sync.items), len(on_loop.items)]

        assert await both() == [2, 2]
        with create_engine(admin, isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": make_url(url).database},
            )
        # The API's pool has no pre-ping (a round trip per page): one page fails...
        with pytest.raises(StoreUnavailable):
            await services.events.list_async(record.principal, job_id)
        # ...and the next is served; SQLAlchemy's pool pings before use, so never fails.
        assert await both() == [2, 2]
    finally:
        await services.db.aclose()
        services.close()
        drop_postgres_database(admin, url)
