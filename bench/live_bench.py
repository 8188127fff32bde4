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
       [--jobs 10] [--rate 10] [--seconds 15] [--baseline-src OLD/src] [--rounds 1]
       [--no-commits]
--baseline-src serves another tree's openft first (an earlier commit's `src`, from
`git archive`), then this tree's, each on a fresh database, back to back in one run;
--rounds alternates such pairs, as the machine's load drifts.
Events arrive as a worker's reports (POST /v1/worker/jobs/{id}/events, a batch every
0.5 s as openft's worker sends them), which the server commits itself: its followers are
woken in-process; on PostgreSQL other API processes would hear of them through
LISTEN/NOTIFY.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import resource
import ssl
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from openft import sse_lines
from openft.domain.entities import BaseModel, EventDraft
from openft.services.jobs import NewJob
from openft.settings import Settings
from openft.store.database import Database, make_engine, sqlite_url
from openft.testing.data import chat_file
from openft.testing.databases import create_postgres_database, drop_postgres_database
from openft.testing.server import running_server
from openft.wiring import build_services
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


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) process `pid` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Tally:
    """What the followers saw: each as a real client, reconnecting with Last-Event-ID
    whenever its stream ends without `[DONE]` (dropped as too slow, cut, refused)."""

    latencies: list[float] = field(default_factory=list)
    drops: int = 0  # streams that ended before [DONE]
    reconnects: int = 0  # streams opened again after one
    lost: int = 0  # events a follower never got (a gap in a job's numbering)
    repeated: int = 0  # events a follower got twice


async def follow(client: httpx.AsyncClient, url: str, tally: Tally, ready: asyncio.Event) -> None:
    last_id: str | None = None  # the last event received, for Last-Event-ID
    expected = 1  # the number the next of the bench's events for this job carries
    while True:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        event_id = None
        try:
            async with client.stream("GET", url, headers=headers) as response:
                response.raise_for_status()
                async for line in sse_lines.alines(response.aiter_bytes()):
                    if line.startswith("id: "):
                        event_id = line[4:]
                    elif line.startswith("data: {"):
                        data = orjson.loads(line[6:])["data"]
                        last_id = event_id
                        if "sent_at" not in data:
                            ready.set()  # the replay arrived: this follower is live
                            continue
                        tally.latencies.append(time.time() - data["sent_at"])
                        if data["n"] < expected:
                            tally.repeated += 1
                        else:
                            tally.lost += data["n"] - expected
                            expected = data["n"] + 1
                    elif line == "data: [DONE]":
                        return
        except (httpx.TransportError, httpx.HTTPStatusError):
            pass  # cut (or refused while the server was busy): reconnect like a client
        tally.drops += 1
        tally.reconnects += 1
        await asyncio.sleep(0.05)


async def report(
    workers: dict[str, httpx.AsyncClient],
    rate: float,
    seconds: float,
    answered: list[float],
    *,
    together: bool = False,
) -> tuple[int, int]:
    """Each job gets `rate` events/s, reported as openft's own worker reports them: a
    batch every FLUSH_SECONDS; returns the events and the reports sent. Each job's worker
    keeps its own time, as independent workers do: their reports are spread over the
    interval (`together`: all jobs' reports at the same instant, a burst). `answered`
    gets each report's time to its answer (its commit): the part of a delivery's latency
    spent before any follower could be woken."""
    job_ids = list(workers)
    per_batch = max(1, round(rate * FLUSH_SECONDS))
    deadline = time.monotonic() + seconds
    counts = [0, 0]  # events, reports

    async def send(job_id: str, batch: int) -> None:
        first = (batch - 1) * per_batch + 1  # each job's events are numbered 1, 2, …
        now = time.time()
        events = [
            {"message": "tick", "data": {"sent_at": now, "n": first + k}} for k in range(per_batch)
        ]
        body = {"batch": batch, "events": events}
        for attempt in range(5):  # as openft's worker: the batch number makes a retry safe
            try:
                (await workers[job_id].post(f"/jobs/{job_id}/events", json=body)).raise_for_status()
                answered.append(time.time() - now)
                return
            except httpx.TransportError:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.1)

    async def worker(job_id: str, offset: float) -> None:
        due = time.monotonic() + offset
        batch = 0
        while due < deadline:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            batch += 1
            await send(job_id, batch)
            counts[0] += per_batch
            counts[1] += 1
            due += FLUSH_SECONDS

    spread = 0.0 if together else FLUSH_SECONDS / len(job_ids)
    await asyncio.gather(*(worker(job_id, n * spread) for n, job_id in enumerate(job_ids)))
    return counts[0], counts[1]


async def run_followers(
    base: str, key: str, worker_key: str, job_ids: list[str], args: argparse.Namespace, pid: int
) -> None:
    # A client per job, for its reports (as each job has its own worker) and for its
    # followers: httpx's pool scans all its connections for every request, so one pool
    # of a thousand would make this process, not the server, the bottleneck.
    tls = ssl.create_default_context()  # made once: each client would load the CAs again
    per_job = -(-args.followers // len(job_ids)) + 2
    async with contextlib.AsyncExitStack() as stack:
        readers, workers = {}, {}
        for job_id in job_ids:
            readers[job_id] = await stack.enter_async_context(
                httpx.AsyncClient(
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=None,
                    limits=httpx.Limits(max_connections=per_job),
                    verify=tls,
                )
            )
            workers[job_id] = await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=f"{base}/worker",
                    headers={"Authorization": f"Bearer {worker_key}", "OpenFT-Worker": "bench"},
                    timeout=60,
                    verify=tls,
                )
            )
        before = rss_kib(pid)
        tally = Tally()
        readies = [asyncio.Event() for _ in range(args.followers)]
        tasks = [
            asyncio.create_task(
                follow(
                    readers[job_ids[n % len(job_ids)]],
                    f"{base}/fine_tuning/jobs/{job_ids[n % len(job_ids)]}/events?stream=true",
                    tally,
                    readies[n],
                )
            )
            for n in range(args.followers)
        ]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 300)
        # This process's own full collections (a thousand streams' objects scanned) would
        # pause every follower at once and count as the server's latency: what exists
        # now is kept out of them.
        gc.freeze()
        await asyncio.sleep(2)
        idle = rss_kib(pid)
        print(
            f"[{args.backend}] server memory per idle follower: "
            f"{(idle - before) / args.followers:.1f} KiB ({args.followers} followers)"
        )
        tally.drops = tally.reconnects = 0  # count those of the measured span only
        started, cpu = time.monotonic(), cpu_seconds(pid)
        answered: list[float] = []
        sent, reports = await report(
            workers, args.rate, args.seconds, answered, together=args.together
        )
        elapsed = time.monotonic() - started
        busy = cpu_seconds(pid) - cpu
        await asyncio.sleep(2)  # the last ones arrive
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    expected = sent * args.followers // len(job_ids)
    achieved = sent / len(job_ids) / elapsed
    delivered = len(tally.latencies) / args.followers / elapsed
    latencies = tally.latencies or [float("nan")]
    p50, p99 = statistics.median(latencies) * 1000, percentile(latencies, 0.99) * 1000
    print(
        f"[{args.backend}] {args.jobs} jobs, {args.followers} followers: reported"
        f" {achieved:.1f} events/s a job (asked {args.rate:g}), delivered {delivered:.1f}"
        f" events/s a follower; {len(tally.latencies):,} deliveries of {expected:,} expected"
        f" ({tally.lost:,} lost, {tally.repeated:,} repeated); latency p50 {p50:.1f} ms,"
        f" p99 {p99:.1f} ms; {tally.drops} drops, {tally.reconnects} reconnects"
    )
    answered = answered or [float("nan")]
    print(
        f"[{args.backend}] a report's answer (its commit) p50"
        f" {statistics.median(answered) * 1000:.1f} ms,"
        f" p99 {percentile(answered, 0.99) * 1000:.1f} ms"
    )
    print(
        f"[{args.backend}] server CPU while reporting: {busy / elapsed:.0%} of its core,"
        f" {busy / reports * 1000:.2f} ms a report (with its fan-out to"
        f" {args.followers // len(job_ids)} followers)"
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


def measure(args: argparse.Namespace, src: str | None) -> None:
    """One run on a fresh database, served by this tree's openft or by `src`'s."""
    work = Path(tempfile.mkdtemp(prefix="openft-live-bench-"))
    admin = None
    if args.backend == "postgres":
        admin = os.environ.get("OPENFT_TEST_POSTGRES_URL") or (
            "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        )
        url = create_postgres_database(admin)
    else:
        url = sqlite_url(work)
    env = {"PYTHONPATH": src} if src else None  # another tree's openft: a baseline
    try:
        with running_server(url, work, "tiny=/nonexistent/tiny", env=env) as server:
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
        if admin is not None and src is None and not args.no_commits:
            with_notify = commits_per_second(url, work, notify=True)
            without = commits_per_second(url, work, notify=False)
            print(
                f"[postgres] one-event commits/s: {with_notify:,.0f} with the notification, "
                f"{without:,.0f} without ({with_notify / without - 1:+.1%})"
            )
    finally:
        if admin is not None:
            drop_postgres_database(admin, url)


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
    parser.add_argument(
        "--baseline-src", help="first serve openft from this src/ directory, then this tree's"
    )
    parser.add_argument("--rounds", type=int, default=1, help="baseline/now pairs, alternated")
    parser.add_argument(
        "--together",
        action="store_true",
        help="every job reports at the same instant (a burst), not spread as independent"
        " workers' reports are",
    )
    parser.add_argument(
        "--no-commits", action="store_true", help="skip PostgreSQL's commits/s measure"
    )
    args = parser.parse_args()
    for _ in range(args.rounds):
        if args.baseline_src:
            print(f"-- baseline: {args.baseline_src}", flush=True)
            measure(args, args.baseline_src)
            print("-- now: this tree", flush=True)
        measure(args, None)


if __name__ == "__main__":
    main()
