"""Live-events benchmark: many followers of event streams on one server process.

Prints:
- delivery latency p50/p99, from the worker's report of an event to a follower's
  receipt of it, for FOLLOWERS concurrent followers (spread over JOBS jobs) each
  receiving RATE events/s; the server is one process (one uvicorn worker) pinned to one
  core, the followers and the reporting worker run here on the other;
- the server's memory per idle follower (RSS with idle followers, less without);
- on PostgreSQL, commits/s of one-event transactions with and without the notification
  that wakes other processes' followers.

Usage: python bench/live_bench.py [--backend postgres|sqlite] [--followers 1000]
       [--jobs 10] [--rate 10] [--seconds 15]
Events arrive as a worker's reports (POST /v1/worker/jobs/{id}/events, a batch every
0.5 s as openft's worker sends them), which the server commits itself: its followers are
woken in-process; on PostgreSQL other API processes would hear of them through
LISTEN/NOTIFY.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from openft.cli.wiring import build_services
from openft.domain.entities import BaseModel, EventDraft
from openft.services.jobs import NewJob
from openft.settings import Settings
from openft.store.database import Database, make_engine, sqlite_url
from openft.testing.data import chat_file
from openft.testing.databases import create_postgres_database, drop_postgres_database
from openft.testing.server import running_server
from openft.worker.runner import FLUSH_SECONDS

SERVER_CPU = 0


def pin(pid: int, cpu: int) -> None:
    if (os.cpu_count() or 1) > cpu:
        for task in Path(f"/proc/{pid}/task").iterdir():
            os.sched_setaffinity(int(task.name), {cpu})


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def follow(
    client: httpx.AsyncClient, url: str, latencies: list[float], ready: asyncio.Event
) -> None:
    async with client.stream("GET", url) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                data = json.loads(line[6:])["data"]
                if "sent_at" in data:
                    latencies.append(time.time() - data["sent_at"])
                else:
                    ready.set()  # the replay arrived: this follower is live


async def report(worker: httpx.AsyncClient, job_ids: list[str], rate: float, seconds: float) -> int:
    """Each job gets `rate` events/s, reported as openft's own worker reports them: a
    batch every FLUSH_SECONDS, the jobs' reports sent concurrently; returns the events."""
    per_batch = max(1, round(rate * FLUSH_SECONDS))
    batches = dict.fromkeys(job_ids, 0)

    async def send(job_id: str) -> None:
        batches[job_id] += 1
        events = [{"message": "tick", "data": {"sent_at": time.time()}}] * per_batch
        body = {"batch": batches[job_id], "events": events}
        (await worker.post(f"/jobs/{job_id}/events", json=body)).raise_for_status()

    sent, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        tick = time.monotonic()
        await asyncio.gather(*(send(job_id) for job_id in job_ids))
        sent += len(job_ids) * per_batch
        await asyncio.sleep(max(0.0, FLUSH_SECONDS - (time.monotonic() - tick)))
    return sent


async def run_followers(
    base: str, key: str, worker_key: str, job_ids: list[str], args: argparse.Namespace, pid: int
) -> None:
    limits = httpx.Limits(max_connections=args.followers + 10)
    async with (
        httpx.AsyncClient(
            headers={"Authorization": f"Bearer {key}"}, timeout=None, limits=limits
        ) as client,
        httpx.AsyncClient(
            base_url=f"{base}/worker",
            headers={"Authorization": f"Bearer {worker_key}", "OpenFT-Worker": "bench"},
            timeout=60,
            limits=httpx.Limits(max_connections=len(job_ids)),
        ) as worker,
    ):
        before = rss_kib(pid)
        latencies: list[float] = []
        readies = [asyncio.Event() for _ in range(args.followers)]
        tasks = [
            asyncio.create_task(
                follow(
                    client,
                    f"{base}/fine_tuning/jobs/{job_ids[n % len(job_ids)]}/events?stream=true",
                    latencies,
                    readies[n],
                )
            )
            for n in range(args.followers)
        ]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 120)
        await asyncio.sleep(2)
        idle = rss_kib(pid)
        print(
            f"[{args.backend}] server memory per idle follower: "
            f"{(idle - before) / args.followers:.1f} KiB ({args.followers} followers)"
        )
        sent = await report(worker, job_ids, args.rate, args.seconds)
        await asyncio.sleep(2)  # the last ones arrive
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    expected = sent * args.followers // len(job_ids)
    achieved = sent / len(job_ids) / args.seconds
    p50, p99 = statistics.median(latencies) * 1000, percentile(latencies, 0.99) * 1000
    print(
        f"[{args.backend}] {args.followers} followers, {achieved:.1f} events/s each (asked"
        f" {args.rate:g}): {len(latencies):,} deliveries of {expected:,} expected; latency"
        f" p50 {p50:.1f} ms, p99 {p99:.1f} ms"
    )


def commits_per_second(url: str, data_dir: Path, notify: bool, seconds: float = 5) -> float:
    services = build_services(
        Settings(data_dir=data_dir, database_url=url), [BaseModel("tiny", "unused")]
    )
    database = Database(make_engine(url), notify=notify)
    try:
        _key, record = services.keys.create("commits")
        train = services.files.upload(record.principal, "t.jsonl", "fine-tune", [chat_file()])
        job = services.jobs.create(record.principal, NewJob(model="tiny", training_file=train.id))
        done, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            with database.write() as tx:
                tx.append_events(job.id, [EventDraft("one")], int(time.time()))
            done += 1
        return done / seconds
    finally:
        database.dispose()
        services.close()


def raise_open_files_limit() -> None:
    """A thousand followers are a thousand sockets in the server and here: more than the
    usual soft limit of 1,024 open files. The server inherits the raised limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


def main() -> None:
    raise_open_files_limit()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", default="postgres", choices=["postgres", "sqlite"])
    parser.add_argument("--followers", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--rate", type=float, default=10)
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="openft-live-bench-"))
    admin = None
    if args.backend == "postgres":
        admin = os.environ.get("OPENFT_TEST_POSTGRES_URL") or (
            "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        )
        url = create_postgres_database(admin)
    else:
        url = sqlite_url(work)
    try:
        with running_server(url, work, "tiny=/nonexistent/tiny") as server:
            pin(server.process.pid, SERVER_CPU)
            worker_key = server.new_key("bench-workers", scope="worker")
            headers = {"Authorization": f"Bearer {server.key}"}
            with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as http:
                train = http.post(
                    "/files",
                    files={"file": ("t.jsonl", chat_file())},
                    data={"purpose": "fine-tune"},
                ).json()["id"]
                job_ids = [
                    http.post(
                        "/fine_tuning/jobs", json={"model": "tiny", "training_file": train}
                    ).json()["id"]
                    for _ in range(args.jobs)
                ]
                while any(
                    http.get(f"/fine_tuning/jobs/{j}").json()["status"] != "queued" for j in job_ids
                ):
                    time.sleep(0.2)
            claimer = {"Authorization": f"Bearer {worker_key}"}
            for _ in job_ids:  # the bench is the worker that runs them all
                httpx.post(
                    f"{server.base_url}/worker/claim", json={"worker_id": "bench"}, headers=claimer
                ).raise_for_status()
            asyncio.run(
                run_followers(
                    server.base_url, server.key, worker_key, job_ids, args, server.process.pid
                )
            )
        if admin is not None:
            with_notify = commits_per_second(url, work, notify=True)
            without = commits_per_second(url, work, notify=False)
            print(
                f"[postgres] one-event commits/s: {with_notify:,.0f} with the notification, "
                f"{without:,.0f} without ({with_notify / without - 1:+.1%})"
            )
    finally:
        if admin is not None:
            drop_postgres_database(admin, url)


if __name__ == "__main__":
    main()
