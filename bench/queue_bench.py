"""Queue benchmark: many jobs through simulated workers and two API replicas.

JOBS jobs (1,000) are created and queued, then WORKERS simulated workers (8, each its own
process) drain the queue through the worker protocol over HTTP, as `openft worker` does,
with openft's own `WorkerClient`: claim, a heartbeat, REPORTS numbered event batches (20)
of BATCH metrics events each (1: one report per step; a heartbeat again halfway), and
complete with a tiny adapter archive (a tar.gz of a few bytes: no model, no training).
Half the workers talk to replica A, half to replica B: two `openft serve --no-worker`
processes with separate data directories on one fresh PostgreSQL database (created, then
dropped). Everything runs on this machine: the workers' CPU is the benchmark's own cost.

Prints:
- jobs/s from the workers' start to the last completion, and protocol calls/s;
- claim latency p50/p99 (a claim that got a job, as the worker times the call), and the
  p50/p99 of the other calls (heartbeat, report, complete);
- the check: every job claimed once and completed once; through replica B's public events
  API, every job's log holds each lifecycle message once and exactly one metrics event per
  step; the events table holds exactly jobs x events-per-job rows;
- CPU time per job of each replica, of the database's PostgreSQL backends and of the
  workers, and the load average before and after (the machine is shared: figures are
  noisy).

Blobs: by default each replica keeps its own (a local directory in its data dir), so the
training file is uploaded to A and every job is created through A, which validates it
from its disk; workers on B still claim A's jobs (the queue is the database) and upload
their adapters to B, which keeps them: enough to measure the queue. With one blob store
for both, `--blob-url URL` (an OPENFT_BLOB_URL such as s3://bucket/prefix, with the AWS
variables of this environment) or `--s3` (a SeaweedFS bucket started for the run, as
the tests start one), the jobs are created through B from the file uploaded to A.

Usage: python bench/queue_bench.py [--jobs 1000] [--workers 8] [--reports 20]
       [--batch 1] [--blob-url URL | --s3]
PostgreSQL: OPENFT_BENCH_POSTGRES_URL, else OPENFT_TEST_POSTGRES_URL, else the local
server at 127.0.0.1:5432 (user postgres).
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import statistics
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from openft.domain import messages
from openft.domain.entities import EventDraft
from openft.testing.data import chat_file
from openft.testing.databases import create_postgres_database, drop_postgres_database
from openft.testing.s3 import seaweed
from openft.testing.server import Server, running_server
from openft.worker.client import WorkerClient
from openft.worker.protocol import Heartbeat

MODEL = "tiny"
# How many times a worker asks again after an empty claim before it decides the queue is
# drained (racing claimers can skip the last rows that others hold locked).
EMPTY_CLAIMS = 3


@dataclass(frozen=True)
class JobShape:
    reports: int  # numbered event batches a job's worker sends
    batch: int  # metrics events in each

    @property
    def steps(self) -> int:
        return self.reports * self.batch


@dataclass
class WorkerResult:
    name: str
    claimed: list[str] = field(default_factory=list)
    succeeded: list[str] = field(default_factory=list)
    claim_ms: list[float] = field(default_factory=list)
    empty_claim_ms: list[float] = field(default_factory=list)
    call_ms: dict[str, list[float]] = field(default_factory=dict)
    finished_at: float = 0.0
    cpu_seconds: float = 0.0
    error: str | None = None

    def timed(self, call: str, started: float) -> None:
        self.call_ms.setdefault(call, []).append((time.perf_counter() - started) * 1000)


def adapter_archive(directory: Path) -> Path:
    """A tar.gz of a stand-in adapter directory (a few bytes), as a worker uploads one."""
    path = directory / "adapter.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, content in (("adapter_config.json", b"{}"), ("adapter_model.bin", b"x" * 64)):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def metrics(step: int, total: int) -> EventDraft:
    """A metrics event as openft's trainer reports one."""
    loss = 2.5 / (1 + step / 10)
    data: dict[str, object] = {
        "step": step,
        "total_steps": total,
        "train_loss": round(loss, 4),
        "train_mean_token_accuracy": round(1 - loss / 3, 4),
    }
    return messages.step_metrics(data)


def run_job(
    client: WorkerClient, job_id: str, shape: JobShape, archive: Path, r: WorkerResult
) -> str:
    """What a worker does with a claimed job, minus the training; the job's final status."""
    started = time.perf_counter()
    client.heartbeat(job_id, Heartbeat())
    r.timed("heartbeat", started)
    for batch in range(1, shape.reports + 1):
        first = (batch - 1) * shape.batch + 1
        drafts = [metrics(step, shape.steps) for step in range(first, first + shape.batch)]
        started = time.perf_counter()
        client.report(job_id, batch, drafts)
        r.timed("report", started)
        if batch == shape.reports // 2:
            started = time.perf_counter()
            client.heartbeat(job_id, Heartbeat(trained_tokens=batch * 1000))
            r.timed("heartbeat", started)
    started = time.perf_counter()
    job = client.complete(job_id, shape.steps * 1000, archive)
    r.timed("complete", started)
    return str(job["status"])


def worker_main(
    name: str,
    base_url: str,
    key: str,
    shape: JobShape,
    ready: multiprocessing.Queue[str],
    start: EventType,
    results: multiprocessing.Queue[WorkerResult],
) -> None:
    """One simulated worker (its own process, as workers run on their own machines)."""
    r = WorkerResult(name)
    client = WorkerClient(base_url, key, name, timeout=60)
    with tempfile.TemporaryDirectory(prefix="openft-queue-worker-") as work:
        archive = adapter_archive(Path(work))
        ready.put(name)
        start.wait()
        cpu = time.process_time()
        try:
            empty = 0
            while empty < EMPTY_CLAIMS:
                started = time.perf_counter()
                assignment = client.claim()
                elapsed = (time.perf_counter() - started) * 1000
                if assignment is None:
                    r.empty_claim_ms.append(elapsed)
                    empty += 1
                    time.sleep(0.05)
                    continue
                empty = 0
                r.claim_ms.append(elapsed)
                job_id = assignment.job["id"]
                r.claimed.append(job_id)
                if run_job(client, job_id, shape, archive, r) == "succeeded":
                    r.succeeded.append(job_id)
                r.finished_at = time.monotonic()
        except Exception as exc:  # reported by the parent, which then fails the run
            r.error = f"{type(exc).__name__}: {exc}"
        finally:
            client.close()
            r.cpu_seconds = time.process_time() - cpu
    results.put(r)


def percentiles(samples: list[float]) -> str:
    if not samples:
        return "no samples"
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"p50 {statistics.median(ordered):.1f} ms, p99 {p99:.1f} ms"


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) process `pid` has used so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def backend_pids(url: str) -> set[int]:
    """The PostgreSQL server processes serving the database of `url` (the replicas'
    connections; other databases' are not the benchmark's)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalars()
            return {int(pid) for pid in rows}
    finally:
        engine.dispose()


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min, {os.cpu_count()} cores)"


def create_jobs(creator: Server, uploader: Server, count: int) -> list[str]:
    """Upload the training file to `uploader` and create `count` jobs through `creator`
    (8 at a time); their files are validated after each answer, then they are queued."""
    with httpx.Client(
        base_url=uploader.base_url, headers={"Authorization": f"Bearer {uploader.key}"}
    ) as http:
        upload = http.post(
            "/files", files={"file": ("train.jsonl", chat_file())}, data={"purpose": "fine-tune"}
        )
        upload.raise_for_status()
    body = {"model": MODEL, "training_file": upload.json()["id"]}
    headers = {"Authorization": f"Bearer {creator.key}"}  # the file's project too
    with (
        httpx.Client(base_url=creator.base_url, headers=headers, timeout=60) as http,
        ThreadPoolExecutor(8) as pool,
    ):

        def create(_: int) -> str:
            response = http.post("/fine_tuning/jobs", json=body)
            response.raise_for_status()
            return str(response.json()["id"])

        return list(pool.map(create, range(count)))


def count_statuses(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT status, count(*) FROM jobs GROUP BY status")).all()
        return {str(status): int(n) for status, n in rows}
    finally:
        engine.dispose()


def count_events(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM job_events")).scalar_one())
    finally:
        engine.dispose()


def wait_queued(url: str, count: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while (statuses := count_statuses(url)).get("queued", 0) < count:
        if time.monotonic() > deadline or set(statuses) - {"queued", "validating_files"}:
            raise RuntimeError(f"jobs did not all reach the queue: {statuses}")
        time.sleep(0.2)


def job_log_problems(events: list[dict[str, Any]], job_id: str, file_id: str, steps: int) -> str:
    """What is wrong with one succeeded job's log ('' if nothing): every lifecycle message
    once, one metrics event per step 1..steps, nothing else."""
    texts = Counter(event["message"] for event in events if event["type"] == "message")
    expected = Counter(
        draft.message
        for draft in (
            messages.created(job_id),
            messages.validating(file_id, None),
            messages.validated(),
            messages.started("any"),
            messages.succeeded(),
        )
    )
    models = [t for t in texts if t.startswith("New fine-tuned model created: ")]
    problems = []
    if len(models) != 1 or texts[models[0]] != 1:
        problems.append(f"model-created messages {models}")
    for message in models:
        del texts[message]
    if texts != expected:
        problems.append(f"messages {dict(texts)}")
    reported = sorted(event["data"]["step"] for event in events if event["type"] == "metrics")
    if reported != list(range(1, steps + 1)):
        problems.append(f"metrics steps {reported}")
    if len({event["id"] for event in events}) != len(events):
        problems.append("repeated event ids")
    return "; ".join(problems)


def check_logs(server: Server, job_ids: list[str], steps: int) -> tuple[int, list[str]]:
    """Read every job and its whole log through `server`'s public API (the replica that
    did not create them); the events read and the problems found."""
    problems: list[str] = []
    headers = {"Authorization": f"Bearer {server.key}"}
    with (
        httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as http,
        ThreadPoolExecutor(8) as pool,
    ):

        def check(job_id: str) -> int:
            job = http.get(f"/fine_tuning/jobs/{job_id}").json()
            events: list[dict[str, Any]] = []
            after: str | None = None
            while True:
                params: dict[str, str | int] = {"limit": 100}
                if after is not None:
                    params["after"] = after
                page = http.get(f"/fine_tuning/jobs/{job_id}/events", params=params).json()
                events += page["data"]
                if not page["has_more"]:
                    break
                after = page["data"][-1]["id"]
            if job["status"] != "succeeded":
                problems.append(f"{job_id}: status {job['status']}")
            found = job_log_problems(events, job_id, job["training_file"], steps)
            if found:
                problems.append(f"{job_id}: {found}")
            return len(events)

        return sum(pool.map(check, job_ids)), problems


@contextmanager
def replicas(url: str, work: Path, blobs: dict[str, str]) -> Iterator[tuple[Server, Server]]:
    """Two `openft serve --no-worker` processes on one database, separate data dirs, each
    with a key of the same project; `blobs`: their blob store's variables (none: each its
    own local store)."""
    # The default 30 s (the test helper's 1 s could have B validate a job of A's, reading
    # the training file from B's own disk): A validates the jobs it creates itself.
    env = {"OPENFT_REVALIDATE_AFTER_SECONDS": "30", **blobs}
    with ExitStack() as stack:
        a = stack.enter_context(running_server(url, work / "a", f"{MODEL}=/nonexistent", env=env))
        b = stack.enter_context(running_server(url, work / "b", f"{MODEL}=/nonexistent", env=env))
        yield a, b


@contextmanager
def blob_store(args: argparse.Namespace, work: Path) -> Iterator[dict[str, str]]:
    """The variables that give both replicas one blob store: `--blob-url` (its AWS
    variables from this environment), a SeaweedFS started here (`--s3`), or none."""
    if args.s3:
        with seaweed(work / "seaweedfs", bucket="openft-queue-bench") as s3:
            yield {**s3.env(), "OPENFT_BLOB_URL": s3.url("bench")}
    else:
        yield {"OPENFT_BLOB_URL": args.blob_url} if args.blob_url else {}


def run(args: argparse.Namespace, url: str, work: Path) -> bool:
    shape = JobShape(args.reports, args.batch)
    with blob_store(args, work) as blobs, replicas(url, work, blobs) as (a, b):
        worker_key = a.new_key("bench-workers", scope="worker")
        started = time.monotonic()
        job_ids = create_jobs(b if blobs else a, a, args.jobs)
        wait_queued(url, args.jobs)
        where = "S3" if args.s3 else "shared" if blobs else "each replica's own"
        print(
            f"{args.jobs:,} jobs created and queued in {time.monotonic() - started:.1f} s "
            f"(file uploaded to replica A, jobs created through {'B' if blobs else 'A'}; "
            f"blobs: {where})"
        )
        context = multiprocessing.get_context("spawn")
        ready: multiprocessing.Queue[str] = context.Queue()
        results: multiprocessing.Queue[WorkerResult] = context.Queue()
        start = context.Event()
        processes = [
            context.Process(
                target=worker_main,
                args=(f"w{n}", (a, b)[n % 2].root_url, worker_key, shape),
                kwargs={"ready": ready, "start": start, "results": results},
            )
            for n in range(args.workers)
        ]
        for process in processes:
            process.start()
        for _ in processes:
            ready.get(timeout=120)
        load_before = load()
        servers = (a.process.pid, b.process.pid)
        backends = backend_pids(url)
        cpu_before = [cpu_seconds(pid) for pid in (*servers, *backends)]
        t0 = time.monotonic()
        start.set()
        done = [results.get(timeout=3600) for _ in processes]
        cpu_after = [cpu_seconds(pid) for pid in (*servers, *backends)]
        # A connection that ended during the run took its CPU time with it (counted as 0).
        ended = len(backends - backend_pids(url))
        # Connections opened during the run: all their time was spent in it.
        new_backends = sum(cpu_seconds(pid) for pid in backend_pids(url) - backends)
        for process in processes:
            process.join()
        load_after = load()
        t1 = max(r.finished_at for r in done)
        statuses = count_statuses(url)
        stored = count_events(url)
        read, problems = check_logs(b, job_ids, shape.steps)

    claimed = Counter(job for r in done for job in r.claimed)
    succeeded = Counter(job for r in done for job in r.succeeded)
    problems += [f"{r.name}: {r.error}" for r in done if r.error]
    problems += [f"{job} claimed {n} times" for job, n in claimed.items() if n != 1]
    problems += [f"{job} never claimed" for job in set(job_ids) - set(claimed)]
    problems += [f"{job} completed {n} times" for job, n in succeeded.items() if n != 1]
    # created, validating, validated, started, the metrics, model created, succeeded
    expected_events = args.jobs * (6 + shape.steps)
    if stored != expected_events or read != expected_events:
        problems.append(f"events: {stored:,} stored, {read:,} read, {expected_events:,} expected")
    if statuses != {"succeeded": args.jobs}:
        problems.append(f"job statuses {statuses}")

    elapsed = t1 - t0
    calls = sum(len(samples) for r in done for samples in r.call_ms.values())
    calls += sum(len(r.claim_ms) + len(r.empty_claim_ms) for r in done)
    print(
        f"{args.workers} workers, 2 replicas, {shape.reports} reports of {shape.batch} "
        f"metrics event{'s' if shape.batch > 1 else ''} a job: "
        f"{len(succeeded):,} jobs in {elapsed:.2f} s = {len(succeeded) / elapsed:.1f} jobs/s "
        f"({calls / elapsed:,.0f} protocol calls/s)"
    )
    claims = [ms for r in done for ms in r.claim_ms]
    empty = [ms for r in done for ms in r.empty_claim_ms]
    print(f"claim latency (a job): {percentiles(claims)} ({len(claims):,} claims)")
    if empty:
        print(f"claim latency (empty queue at the end): {percentiles(empty)} ({len(empty)})")
    for call in ("heartbeat", "report", "complete"):
        samples = [ms for r in done for ms in r.call_ms.get(call, [])]
        if samples:
            print(f"{call} latency: {percentiles(samples)} ({len(samples):,} calls)")
    print(
        f"check: {len(claimed):,} jobs claimed once each, {sum(succeeded.values()):,} "
        f"completions, statuses {statuses}; events {stored:,} stored, {read:,} read through "
        f"replica B's events API, {expected_events:,} expected"
    )
    spent = [max(0.0, end - begin) for begin, end in zip(cpu_before, cpu_after, strict=True)]
    replica_a, replica_b, postgres = spent[0], spent[1], sum(spent[2:]) + new_backends
    workers = sum(r.cpu_seconds for r in done)
    print(
        "CPU per job: "
        + ", ".join(
            f"{what} {seconds / args.jobs * 1000:.1f} ms"
            for what, seconds in (
                ("replica A", replica_a),
                ("replica B", replica_b),
                ("PostgreSQL (the database's backends)", postgres),
                ("the workers", workers),
            )
        )
        + f"; {(replica_a + replica_b + postgres + workers) / elapsed:.2f} cores busy of "
        f"{os.cpu_count()}"
    )
    # What the machine would do if all its cores were the benchmark's (other users' load
    # makes the measured rate lower, and contention makes each job's CPU time higher).
    total = replica_a + replica_b + postgres + workers
    print(
        f"CPU-bound estimate: {args.jobs / total:.1f} jobs per CPU-second, so "
        f"{args.jobs / total * (os.cpu_count() or 1):.1f} jobs/s with all {os.cpu_count()} "
        f"cores (servers and database alone: {args.jobs / (total - workers):.1f} jobs per "
        "CPU-second)"
    )
    if ended:
        print(f"({ended} database connections ended during the run: their CPU time is missing)")
    print(f"load average before {load_before}, after {load_after}")
    for problem in problems[:20]:
        print(f"PROBLEM: {problem}")
    if len(problems) > 20:
        print(f"... and {len(problems) - 20} more problems")
    return not problems


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--reports", type=int, default=20, help="event reports per job")
    parser.add_argument("--batch", type=int, default=1, help="metrics events per report")
    blobs = parser.add_mutually_exclusive_group()
    blobs.add_argument("--blob-url", help="an OPENFT_BLOB_URL for both replicas (s3://...)")
    blobs.add_argument(
        "--s3", action="store_true", help="both replicas on a SeaweedFS bucket started here"
    )
    args = parser.parse_args()
    admin = (
        os.environ.get("OPENFT_BENCH_POSTGRES_URL")
        or os.environ.get("OPENFT_TEST_POSTGRES_URL")
        or "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    url = create_postgres_database(admin)
    try:
        with tempfile.TemporaryDirectory(prefix="openft-queue-bench-") as work:
            ok = run(args, url, Path(work))
    finally:
        drop_postgres_database(admin, url)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
