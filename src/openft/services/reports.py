"""Workers' reports, written many to a transaction by one thread.

A report is small (a batch of a few events), and a hundred jobs send two a second each.
Written one to a transaction, each from a thread of its own, they cost a commit apiece
(PostgreSQL waits for its log to reach the disk; SQLite takes its one write lock), a
pooled connection apiece (past the pool's size, a new one each time), and a hundred
threads taking turns at the interpreter. Here the API's event loop hands each report
to one writer thread and awaits its answer; the writer takes every report waiting and
applies them in order in one transaction, so while one commit is on its way the next
reports gather for the next.

Every report is applied exactly as alone (`WorkerService.apply_report`: its own lease
check, batch number and step dedupe, in the order they came), and a report is answered
only once the transaction that holds it has committed: an acknowledged batch is
durable. A report refused (its lease lost, its job gone) writes nothing, so the others
go on. A transaction that fails (a value the database refuses, a dropped connection)
committed nothing: each of its reports is then tried alone, so one bad report fails by
itself and the others are applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from openft.domain.entities import EventDraft
from openft.domain.errors import OpenFTError
from openft.store.interface import Store, Transaction

log = logging.getLogger(__name__)
# The most reports in one transaction: enough for every job's report of one flush.
MOST_PER_TRANSACTION = 256
# Writers at once where each statement waits on a network (PostgreSQL): a transaction of
# a hundred reports is a few hundred round trips, and while one writer waits on its
# answer the others send theirs (different jobs' rows: they never wait on each other).
# SQLite takes one writer at a time, so there one writer gathers every report.
WRITERS = 4

# Applies one report in a transaction: whether its batch was new (see `WorkerService`).
Apply = Callable[[Transaction, str, str, int, Sequence[EventDraft]], bool]
Outcome = bool | BaseException


@dataclass(slots=True)
class _Report:
    job_id: str
    worker_id: str
    batch: int
    drafts: Sequence[EventDraft]
    loop: asyncio.AbstractEventLoop
    answer: asyncio.Future[bool]

    def settle(self, outcome: Outcome) -> None:
        # A loop that closed meanwhile has no one waiting (a test's, at its end).
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(_settle, self.answer, outcome)


def _settle(answer: asyncio.Future[bool], outcome: Outcome) -> None:
    if answer.done():  # the request was cancelled (its client went away)
        return
    if isinstance(outcome, BaseException):
        answer.set_exception(outcome)
    else:
        answer.set_result(outcome)


class ReportWriter:
    def __init__(
        self,
        db: Store,
        apply: Apply,
        *,
        most: int = MOST_PER_TRANSACTION,
        writers: int | None = None,
    ) -> None:
        """`writers`: threads writing at once, each for its own share of the jobs (by
        default one where a write waits on no network, `WRITERS` where it does)."""
        self._db = db
        self._apply = apply
        self._most = most
        count = writers or (1 if db.inline_reads else WRITERS)
        self._queues: list[queue.SimpleQueue[_Report]] = [queue.SimpleQueue() for _ in range(count)]
        self._started = False
        self._start_lock = threading.Lock()

    async def write(
        self, job_id: str, worker_id: str, batch: int, drafts: Sequence[EventDraft]
    ) -> bool:
        """Apply one report, once the transaction that holds it has committed."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bool] = loop.create_future()
        self._start()
        # A job's reports all go to one writer, so they are applied in the order sent.
        lane = self._queues[zlib.crc32(job_id.encode()) % len(self._queues)]
        lane.put(_Report(job_id, worker_id, batch, drafts, loop, answer))
        return await answer

    def _start(self) -> None:
        if not self._started:
            with self._start_lock:
                if not self._started:
                    # Daemons: they hold nothing between transactions, so a process that
                    # ends needs nothing from them (a report not yet committed was never
                    # answered, and its worker sends it again).
                    for number, lane in enumerate(self._queues):
                        threading.Thread(
                            target=self._run,
                            args=(lane,),
                            name=f"openft-report-writer-{number}",
                            daemon=True,
                        ).start()
                    self._started = True

    def _run(self, lane: queue.SimpleQueue[_Report]) -> None:
        while True:
            group = [lane.get()]
            while len(group) < self._most:
                try:
                    group.append(lane.get_nowait())
                except queue.Empty:
                    break
            try:
                outcomes = self._together(group)
            except Exception as exc:  # a bug: answer every report, never leave one waiting
                log.exception("writing workers' reports failed")
                outcomes = [exc] * len(group)
            for report, outcome in zip(group, outcomes, strict=True):
                report.settle(outcome)

    def _together(self, group: list[_Report]) -> list[Outcome]:
        if len(group) > 1:
            try:
                with self._db.write() as tx:
                    return [self._one(tx, report) for report in group]
            except Exception:
                pass  # nothing of it was committed: each report is tried alone below
        return [self._alone(report) for report in group]

    def _one(self, tx: Transaction, report: _Report) -> Outcome:
        try:
            return self._apply(tx, report.job_id, report.worker_id, report.batch, report.drafts)
        except OpenFTError as exc:  # refused before it wrote anything: the others go on
            return exc

    def _alone(self, report: _Report) -> Outcome:
        try:
            with self._db.write() as tx:
                return self._apply(tx, report.job_id, report.worker_id, report.batch, report.drafts)
        except Exception as exc:
            return exc
