"""Workers' reports written many to a transaction (services/reports.py), on both databases:
each applied exactly as alone, a refused one leaving the others be, a failed transaction
tried again report by report."""

from __future__ import annotations

import asyncio
import threading
import zlib
from collections.abc import Sequence
from typing import Any

import pytest
import sqlalchemy

from openft.domain.entities import EventDraft, Principal
from openft.domain.errors import InvalidRequest, LeaseLost
from openft.domain.messages import step_metrics
from openft.services.container import Services
from openft.services.jobs import NewJob
from openft.services.reports import ReportWriter
from openft.store.interface import Transaction
from openft.testing.data import chat_file


def running(services: Services, principal: Principal, count: int) -> list[str]:
    """`count` jobs, each claimed by the worker "w"."""
    train = services.files.upload(principal, "train.jsonl", "fine-tune", [chat_file(20)]).id
    jobs = []
    for _ in range(count):
        job = services.jobs.create(principal, NewJob(model="tiny", training_file=train))
        services.jobs.validate(job.id)
        assignment = services.worker.claim("w")
        assert assignment is not None
        jobs.append(assignment.job.id)
    return jobs


def metrics(step: int) -> EventDraft:
    return step_metrics({"step": step, "total_steps": 10, "train_loss": 1.0 / step})


def reported(services: Services, principal: Principal, job_id: str) -> list[str]:
    """What the worker reported into the job, oldest first (a metrics event: its step)."""
    events = reversed(services.events.list(principal, job_id, limit=1000).items)
    messages = [event.message.split(":")[0] for event in events]
    return messages[messages.index("Fine-tuning job started") + 1 :]


class Gated:
    """Applies reports as the service does, but holds the first until `gate` opens, so
    that those sent meanwhile wait together; notes each report's transaction."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.gate = threading.Event()
        self.transactions: list[Transaction] = []  # held, so their ids stay theirs

    def __call__(
        self, tx: Transaction, job_id: str, worker_id: str, batch: int, drafts: Sequence[EventDraft]
    ) -> bool:
        self.gate.wait(10)
        self.transactions.append(tx)
        return self.services.worker.apply_report(tx, job_id, worker_id, batch, drafts)


async def test_waiting_reports_share_a_transaction_and_each_is_applied_as_alone(
    services: Services, principal: Principal
) -> None:
    a, b, c = running(services, principal, 3)
    apply = Gated(services)
    writer = ReportWriter(services.db, apply, writers=1)
    first = asyncio.ensure_future(writer.write(a, "w", 1, [metrics(1)]))
    await asyncio.sleep(0.1)  # the writer holds it at the gate
    waiting = [
        asyncio.ensure_future(report)
        for report in (
            writer.write(a, "w", 1, [metrics(1)]),  # the same batch again: not applied twice
            writer.write(b, "w", 1, [metrics(1), metrics(2)]),
            writer.write(c, "someone-else", 1, [metrics(1)]),  # not its holder: refused
            writer.write(b, "w", 2, [metrics(2), metrics(3)]),  # step 2 again: dropped
        )
    ]
    await asyncio.sleep(0.1)
    apply.gate.set()
    assert await first is True
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    assert outcomes[0] is False and outcomes[1] is True and outcomes[3] is True
    assert isinstance(outcomes[2], LeaseLost)
    first_tx, *rest = map(id, apply.transactions)
    assert len(set(rest)) == 1 and first_tx not in rest  # the four that waited: one

    assert reported(services, principal, a) == ["Step 1/10"]
    assert reported(services, principal, b) == ["Step 1/10", "Step 2/10", "Step 3/10"]
    assert reported(services, principal, c) == []


async def test_a_report_the_database_refuses_fails_alone(
    services: Services, principal: Principal
) -> None:
    if services.db.dialect != "postgresql":  # type: ignore[attr-defined]
        pytest.skip("SQLite stores a NUL character; PostgreSQL refuses the transaction")
    a, b = running(services, principal, 2)
    apply = Gated(services)
    writer = ReportWriter(services.db, apply, writers=1)
    first = asyncio.ensure_future(writer.write(a, "w", 1, [metrics(1)]))
    await asyncio.sleep(0.1)
    waiting = [
        asyncio.ensure_future(writer.write(a, "w", 2, [EventDraft("bad \0 byte")])),
        asyncio.ensure_future(writer.write(b, "w", 1, [metrics(1)])),
    ]
    await asyncio.sleep(0.1)
    apply.gate.set()
    assert await first is True
    refused, applied = await asyncio.gather(*waiting, return_exceptions=True)
    assert isinstance(refused, InvalidRequest) and applied is True
    assert reported(services, principal, a) == ["Step 1/10"]
    assert reported(services, principal, b) == ["Step 1/10"]


async def test_a_transactions_reports_insert_their_events_in_one_statement(
    services: Services, principal: Principal
) -> None:
    a, b, c = running(services, principal, 3)
    apply = Gated(services)
    writer = ReportWriter(services.db, apply, writers=1)
    first = asyncio.ensure_future(writer.write(a, "w", 1, [metrics(1)]))
    await asyncio.sleep(0.1)  # the writer holds it at the gate; the others gather
    inserts: list[int] = []  # the rows of each INSERT into job_events

    def count(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO JOB_EVENTS"):
            inserts.append(len(params) if many else 1)

    engine = services.db.engine  # type: ignore[attr-defined]
    sqlalchemy.event.listen(engine, "before_cursor_execute", count)
    try:
        waiting = [
            asyncio.ensure_future(writer.write(job, "w", batch, [metrics(batch)]))
            for job, batch in ((b, 1), (c, 1), (b, 2), (c, 2))
        ]
        await asyncio.sleep(0.1)
        apply.gate.set()
        assert await first is True
        assert await asyncio.gather(*waiting) == [True] * 4
    finally:
        sqlalchemy.event.remove(engine, "before_cursor_execute", count)
    assert inserts == [1, 4]  # the first report's transaction, then the four's
    assert reported(services, principal, b) == ["Step 1/10", "Step 2/10"]
    assert reported(services, principal, c) == ["Step 1/10", "Step 2/10"]


def test_events_a_transaction_recorded_are_read_in_it(
    services: Services, principal: Principal
) -> None:
    (job_id,) = running(services, principal, 1)
    with services.db.write() as tx:
        recorded = tx.record_event_batch(
            job_id, "w", 1, batch=1, reported_step=1, drafts=[metrics(1)]
        )
        assert recorded is not None
        # Read in the same transaction: its events are inserted before any read of them.
        since = tx.read_events_since(job_id, after_seq=0, limit=100)
        newest = tx.read_events(job_id, before_seq=None, limit=1)
        assert since is not None and since[1].items[-1] == recorded[-1]
        assert newest is not None and newest[1].items == [recorded[-1]]
    assert reported(services, principal, job_id) == ["Step 1/10"]


async def test_writers_take_shares_of_the_jobs_and_each_jobs_reports_in_order(
    services: Services, principal: Principal
) -> None:
    if services.db.dialect != "postgresql":  # type: ignore[attr-defined]
        pytest.skip("SQLite takes one writer at a time (its default: one writer thread)")

    def lane(job: str) -> int:  # as the writer shares the jobs out between two
        return zlib.crc32(job.encode()) % 2

    jobs = running(services, principal, 2)
    while len({lane(job) for job in jobs}) < 2:  # ids are random: until each lane has one
        jobs += running(services, principal, 1)
    a = jobs[0]
    other = next(job for job in jobs if lane(job) != lane(a))
    gate = threading.Event()

    def apply(
        tx: Transaction, job_id: str, worker_id: str, batch: int, drafts: Sequence[EventDraft]
    ) -> bool:
        if job_id == a:  # a's reports wait at the gate; the others' do not
            gate.wait(10)
        return services.worker.apply_report(tx, job_id, worker_id, batch, drafts)

    writer = ReportWriter(services.db, apply, writers=2)
    held = asyncio.ensure_future(writer.write(a, "w", 1, [metrics(1)]))
    await asyncio.sleep(0.1)  # a's writer holds it at the gate
    after = asyncio.ensure_future(writer.write(a, "w", 2, [metrics(2)]))
    # The other writer waits for nothing of a's: its report is applied meanwhile.
    assert await asyncio.wait_for(writer.write(other, "w", 1, [metrics(1)]), 10) is True
    assert not held.done() and not after.done()  # a's second waits behind its first
    gate.set()
    assert await held is True and await after is True
    assert reported(services, principal, a) == ["Step 1/10", "Step 2/10"]
    assert reported(services, principal, other) == ["Step 1/10"]
