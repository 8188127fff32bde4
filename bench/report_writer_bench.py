"""Report writer benchmark: the wall time of rounds of many jobs' reports through
`ReportWriter`, in-process (no HTTP, no followers), on PostgreSQL: the part of a live
delivery's latency spent before its commit, without the bench client's own delays.

Usage: python bench/report_writer_bench.py [--jobs 100] [--events 5] [--rounds 30]
For a baseline, run it with another tree's openft first: PYTHONPATH=OLD/src python …
(it uses only what the earlier trees have).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from openft.domain.entities import BaseModel, EventDraft, KeyScope
from openft.services.jobs import NewJob
from openft.services.reports import ReportWriter
from openft.settings import Settings
from openft.testing.data import chat_file
from openft.testing.databases import create_postgres_database, drop_postgres_database
from openft.wiring import build_services

WARMUP_ROUNDS = 5


async def rounds(writer: ReportWriter, jobs: list[str], events: int, count: int) -> list[float]:
    """Each round: every job's next report at once, as a hundred workers send them."""
    took = []
    for batch in range(1, count + 1):
        drafts = [EventDraft("tick", data={"n": n}) for n in range(events)]
        started = time.perf_counter()
        await asyncio.gather(*(writer.write(job, "bench", batch, drafts) for job in jobs))
        took.append(time.perf_counter() - started)
    return took[WARMUP_ROUNDS:]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--events", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    admin = os.environ.get("OPENFT_TEST_POSTGRES_URL") or (
        "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    url = create_postgres_database(admin)
    try:
        settings = Settings(data_dir=Path(tempfile.mkdtemp()), database_url=url)
        services = build_services(settings, [BaseModel("tiny", "unused")])
        try:
            _key, record = services.keys.create("bench", KeyScope.PROJECT)
            principal = record.principal
            train = services.files.upload(principal, "t.jsonl", "fine-tune", [chat_file(20)])
            jobs = []
            for _ in range(args.jobs):
                job = services.jobs.create(principal, NewJob(model="tiny", training_file=train.id))
                services.jobs.validate(job.id)
                assignment = services.worker.claim("bench")
                assert assignment is not None
                jobs.append(assignment.job.id)
            writer = ReportWriter(services.db, services.worker.apply_report)
            took = asyncio.run(rounds(writer, jobs, args.events, args.rounds + WARMUP_ROUNDS))
        finally:
            services.close()
    finally:
        drop_postgres_database(admin, url)
    print(
        f"[postgres] a round of {args.jobs} reports of {args.events} events:"
        f" median {statistics.median(took) * 1000:.0f} ms, min {min(took) * 1000:.0f} ms,"
        f" max {max(took) * 1000:.0f} ms ({len(took)} rounds)"
    )


if __name__ == "__main__":
    main()
