"""Event-log benchmark: fill one job with N events, then measure what a user feels.

Prints, for SQLite and then PostgreSQL:
- batched append throughput (events/s) through the service layer;
- bytes per stored event (table + indexes);
- server time p50/p99 of a 20-event page at the head and at random depths
  (the service call a request makes: auth excluded, database included);
- HTTP pages/s for the events page against one `openft serve` process (one uvicorn
  worker) pinned to one core, with `wrk -t1 -c16` pinned to the other (when the machine
  has two cores or more; `wrk` when installed, else a Python client); then the SQLite and
  PostgreSQL rates side by side with their ratio.

Usage: python bench/events_bench.py [--events 1000000] [--backends sqlite,postgres]
PostgreSQL: OPENFT_BENCH_POSTGRES_URL, else OPENFT_TEST_POSTGRES_URL, else the local
server at 127.0.0.1:5432 (user postgres); a fresh database is created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import text

from openft.cli.wiring import build_services
from openft.domain.entities import BaseModel, EventDraft, EventType, KeyScope, Principal
from openft.domain.ids import event_id
from openft.services.container import Services
from openft.services.jobs import NewJob
from openft.settings import Settings
from openft.store.database import Database, sqlite_url
from openft.testing.data import chat_file
from openft.testing.databases import create_postgres_database, drop_postgres_database
from openft.testing.server import running_server

BATCH = 1000
PAGE_SAMPLES = 2000


def metrics_event(step: int, total: int) -> EventDraft:
    loss = round(2.5 / (1 + step / 1000) + random.random() * 0.05, 4)
    return EventDraft(
        f"Step {step}/{total}: training loss={loss:.4f}",
        type=EventType.METRICS,
        data={
            "step": step,
            "total_steps": total,
            "train_loss": loss,
            "train_mean_token_accuracy": round(random.random(), 4),
        },
    )


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def stored_bytes(services: Services, data_dir: Path) -> int:
    db = services.db
    assert isinstance(db, Database)  # the SQL store: what this measures
    with db.engine.connect() as conn:
        if db.dialect == "postgresql":
            return int(
                conn.execute(text("SELECT pg_total_relation_size('job_events')")).scalar_one()
            )
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
        try:
            pages = conn.exec_driver_sql(
                "SELECT SUM(pgsize) FROM dbstat WHERE name = 'job_events'"
            ).scalar_one()
            return int(pages)
        except Exception:
            count = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
            return int(page_size * count)


def time_pages(
    services: Services, principal: Principal, job_id: str, event_key: str, total: int
) -> dict[str, tuple[float, float]]:
    """Time the call an events request makes (`list_async`, on an event loop)."""

    async def sample() -> dict[str, tuple[float, float]]:
        results = {}
        for label, cursor in (
            ("head", lambda: None),
            ("random depth", lambda: event_id(event_key, random.randint(21, total))),
        ):
            samples = []
            for _ in range(PAGE_SAMPLES):
                after = cursor()
                start = time.perf_counter()
                page = await services.events.list_async(principal, job_id, after=after, limit=20)
                samples.append((time.perf_counter() - start) * 1000)
                assert len(page.items) == 20
            results[label] = (statistics.median(samples), percentile(samples, 0.99))
        await services.db.aclose()  # its pool belongs to this loop
        return results

    return asyncio.run(sample())


# The server gets core 0, the load generator core 1: they never compete for a core.
SERVER_CPU, LOAD_CPU = 0, 1


def pin(pid: int, cpu: int) -> None:
    """Move every thread of process `pid` onto `cpu` (threads made later inherit it)."""
    if os.cpu_count() and os.cpu_count() > cpu:  # type: ignore[operator]
        for task in Path(f"/proc/{pid}/task").iterdir():
            os.sched_setaffinity(int(task.name), {cpu})


def http_rps(base_url: str, key: str, path: str, seconds: int) -> float:
    if shutil.which("wrk"):
        pinned = ["taskset", "-c", str(LOAD_CPU)] if (os.cpu_count() or 1) > LOAD_CPU else []
        out = subprocess.run(
            [
                *pinned,
                "wrk",
                "-t1",
                "-c16",
                f"-d{seconds}s",
                "-H",
                f"Authorization: Bearer {key}",
                base_url + path,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        line = next(line for line in out.splitlines() if line.startswith("Requests/sec"))
        return float(line.split()[1])
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}) as client:
        done, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            client.get(base_url + path).raise_for_status()
            done += 1
        return done / seconds


def run(backend: str, total: int, http_seconds: int) -> dict[str, float]:
    """Measure one backend; return its HTTP pages/s by label."""
    work = Path(tempfile.mkdtemp(prefix=f"openft-bench-{backend}-"))
    admin = None
    if backend == "sqlite":
        url = sqlite_url(work)
    else:
        admin = (
            os.environ.get("OPENFT_BENCH_POSTGRES_URL")
            or os.environ.get("OPENFT_TEST_POSTGRES_URL")
            or "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        )
        url = create_postgres_database(admin)
    services = build_services(
        Settings(data_dir=work, database_url=url), [BaseModel("tiny", "unused")]
    )
    try:
        key, record = services.keys.create("bench", KeyScope.PROJECT)
        principal = record.principal
        train = services.files.upload(principal, "train.jsonl", "fine-tune", [chat_file()])
        job = services.jobs.create(principal, NewJob(model="tiny", training_file=train.id))
        before = stored_bytes(services, work)
        elapsed = 0.0
        appended = 2
        while appended < total:
            size = min(BATCH, total - appended)
            batch = [metrics_event(appended + i, total) for i in range(1, size + 1)]
            start = time.perf_counter()  # the append alone: making the batch is the caller's
            services.events.append(job.id, batch)
            elapsed += time.perf_counter() - start
            appended += size
        per_event = (stored_bytes(services, work) - before) / (total - 2)
        print(f"[{backend}] events stored: {total:,}")
        print(f"[{backend}] batched append ({BATCH}/batch): {(total - 2) / elapsed:,.0f} events/s")
        print(f"[{backend}] bytes per stored event (table + indexes): {per_event:,.1f}")
        for label, (p50, p99) in time_pages(
            services, principal, job.id, job.event_key, total
        ).items():
            print(f"[{backend}] 20-event page at {label}: p50 {p50:.3f} ms, p99 {p99:.3f} ms")
        rates = {}
        with running_server(url, work) as server:
            pin(server.process.pid, SERVER_CPU)
            for label, path in (
                ("head", f"/fine_tuning/jobs/{job.id}/events?limit=20"),
                (
                    "deep",
                    f"/fine_tuning/jobs/{job.id}/events?limit=20"
                    f"&after={event_id(job.event_key, total // 2)}",
                ),
            ):
                http_rps(server.base_url, key, path, 2)  # warm up
                rps = http_rps(server.base_url, key, path, http_seconds)
                rates[label] = rps
                print(
                    f"[{backend}] HTTP events page ({label}), server on one core:"
                    f" {rps:,.0f} pages/s"
                )
        return rates
    finally:
        services.close()
        if admin is not None:
            drop_postgres_database(admin, url)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--http-seconds", type=int, default=10)
    args = parser.parse_args()
    random.seed(7)
    rates = {
        backend.strip(): run(backend.strip(), args.events, args.http_seconds)
        for backend in args.backends.split(",")
    }
    if {"sqlite", "postgres"} <= set(rates):
        for label, sqlite_rate in rates["sqlite"].items():
            postgres_rate = rates["postgres"][label]
            print(
                f"HTTP events page ({label}): SQLite {sqlite_rate:,.0f} pages/s, PostgreSQL"
                f" {postgres_rate:,.0f} pages/s, ratio {postgres_rate / sqlite_rate:.2f}"
            )


if __name__ == "__main__":
    main()
