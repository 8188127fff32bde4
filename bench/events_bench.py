"""Event-log benchmark: fill one job with N events, then measure what a user feels.

Prints, for SQLite and then PostgreSQL:
- batched append throughput (events/s) through the service layer;
- bytes per stored event (table + indexes);
- server time p50/p99 of a 20-event page at the head and at random depths
  (the service call a request makes: auth excluded, database included);
- HTTP pages/s for the events page against one `openft serve` process as the README starts
  it (one uvicorn worker, its embedded worker, engine and access log on) pinned to one core
  with taskset, with `wrk -t1 -c16` pinned to the other (when the machine has two cores or
  more; `wrk` when installed, else a Python client). In the same run, the same load on the
  ceiling: a bare FastAPI app on uvicorn (uvloop, httptools) serving 20 events from an
  in-memory SQLite table with orjson, no authentication, middleware or log: every openft
  figure is also printed as a share of it. Then the SQLite and PostgreSQL rates side by
  side with their ratio.

Usage: python bench/events_bench.py [--events 1000000] [--backends sqlite,postgres]
       [--rounds 3] [--http-seconds 5] [--variants] [--baseline-src OLD/src]
--variants also measures openft with --no-worker, then --no-access-log (what each costs);
--baseline-src also serves another tree's openft (an earlier commit's `src`, from
`git archive`) in the same rounds, for a before/after on the same machine and load.
PostgreSQL: OPENFT_BENCH_POSTGRES_URL, else OPENFT_TEST_POSTGRES_URL, else the local
server at 127.0.0.1:5432 (user postgres); a fresh database is created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
from sqlalchemy import text

from openft.domain.entities import BaseModel, EventDraft, EventType, KeyScope, Principal
from openft.domain.ids import event_id
from openft.services.container import Services
from openft.services.jobs import NewJob
from openft.settings import Settings
from openft.store.database import Database, sqlite_url
from openft.testing.data import chat_file
from openft.testing.databases import create_postgres_database, drop_postgres_database
from openft.testing.server import free_port, stop
from openft.wiring import build_services

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


def pinned(cpu: int) -> list[str]:
    """The taskset prefix that runs a command on `cpu` alone (none on a one-core machine)."""
    return ["taskset", "-c", str(cpu)] if (os.cpu_count() or 1) > cpu else []


def wait_ready(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start:\n{log_path.read_text()}")
        time.sleep(0.1)


@contextmanager
def serving(
    command: list[str], ready_url: str, log_path: Path, env: dict[str, str] | None = None
) -> Iterator[None]:
    """Run a server `command` pinned to SERVER_CPU until the block ends."""
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [*pinned(SERVER_CPU), *command],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    try:
        wait_ready(ready_url, process, log_path)
        yield
    finally:
        stop(process)


@contextmanager
def openft_server(
    database_url: str, data_dir: Path, flags: list[str], src: str | None = None
) -> Iterator[str]:
    """`openft serve` as the README starts it (embedded worker, access log: to a file
    here, as a terminal would take it), plus `flags`; yields its root URL."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "openft.cli.main",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--database-url",
        database_url,
        *flags,
    ]
    url = f"http://127.0.0.1:{port}"
    env = {"PYTHONPATH": src} if src else None  # another tree's openft: a baseline
    with serving(command, f"{url}/healthz", data_dir / f"server-{port}.log", env):
        yield url


@contextmanager
def ceiling_server() -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = Path(tempfile.gettempdir()) / f"openft-bench-ceiling-{port}.log"
    command = [sys.executable, __file__, "--serve-ceiling", str(port)]
    try:
        with serving(command, f"{url}/healthz", log_path):
            yield url
    finally:
        log_path.unlink(missing_ok=True)


def serve_ceiling(port: int) -> None:
    """The ceiling: what a bare FastAPI app on uvicorn (uvloop, httptools) answers on this
    machine for the same page (20 events of the same shape, from an in-memory SQLite table,
    encoded with orjson), with no authentication, middleware or log."""
    import uvicorn
    from fastapi import FastAPI, Response

    conn = sqlite3.connect(":memory:", check_same_thread=False)
    conn.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, created_at INTEGER, level TEXT,"
        " type TEXT, message TEXT, data TEXT)"
    )
    key = "a" * 16
    rows = []
    for seq in range(1, 1001):
        draft = metrics_event(seq, 1000)
        rows.append((seq, 1_700_000_000, "info", "metrics", draft.message, _json(draft.data)))
    conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows)
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b"ok")

    @app.get("/v1/fine_tuning/jobs/{job_id}/events")
    async def events(job_id: str, limit: int = 20) -> Response:
        found = conn.execute(
            "SELECT seq, created_at, level, type, message, data FROM events"
            " ORDER BY seq DESC LIMIT ?",
            (limit + 1,),
        ).fetchall()
        data = [
            {
                "object": "fine_tuning.job.event",
                "id": event_id(key, seq),
                "created_at": created_at,
                "level": level,
                "message": message,
                "type": kind,
                "data": orjson.loads(body),
            }
            for seq, created_at, level, kind, message, body in found[:limit]
        ]
        page = {"object": "list", "data": data, "has_more": len(found) > limit}
        return Response(orjson.dumps(page), media_type="application/json")

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


def _json(data: dict[str, object]) -> str:
    return orjson.dumps(data).decode()


def http_rps(base_url: str, key: str, path: str, seconds: int) -> float:
    if shutil.which("wrk"):
        out = subprocess.run(
            [
                *pinned(LOAD_CPU),
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
        # A page refused (401, 404, 500) is counted by wrk as a request: none may be.
        if "Non-2xx" in out or "Socket errors" in out:
            raise RuntimeError(f"wrk saw failed requests on {path}:\n{out}")
        line = next(line for line in out.splitlines() if line.startswith("Requests/sec"))
        return float(line.split()[1])
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}) as client:
        done, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            client.get(base_url + path).raise_for_status()
            done += 1
        return done / seconds


def run(
    backend: str,
    total: int,
    http_seconds: int,
    rounds: int,
    extra_variants: bool,
    baseline_src: str | None,
) -> dict[str, float]:
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
        paths = {
            "head": f"/v1/fine_tuning/jobs/{job.id}/events?limit=20",
            "deep": f"/v1/fine_tuning/jobs/{job.id}/events?limit=20"
            f"&after={event_id(job.event_key, total // 2)}",
        }
        variants: dict[str, tuple[list[str], str | None]] = {"openft serve defaults": ([], None)}
        if baseline_src:
            variants[f"baseline {baseline_src}"] = ([], baseline_src)
        if extra_variants:
            variants["--no-worker"] = (["--no-worker"], None)
            variants["--no-access-log"] = (["--no-access-log"], None)
        # All servers up at once, measured in turn, round after round: a machine shared
        # with other work changes speed within a run, so each round's share of the
        # ceiling compares figures taken seconds apart; the medians are printed.
        with contextlib.ExitStack() as stack:
            ceiling_url = stack.enter_context(ceiling_server())
            urls = {
                v: stack.enter_context(openft_server(url, work, flags, src))
                for v, (flags, src) in variants.items()
            }
            targets = {"ceiling": (ceiling_url, paths["head"])} | {
                f"{label}, {variant}": (base_url, path)
                for variant, base_url in urls.items()
                for label, path in paths.items()
            }
            for base_url, path in targets.values():
                http_rps(base_url, key, path, 2)  # warm up
            samples: dict[str, list[float]] = {name: [] for name in targets}
            shares: dict[str, list[float]] = {name: [] for name in targets}
            for _ in range(rounds):
                for name, (base_url, path) in targets.items():
                    samples[name].append(http_rps(base_url, key, path, http_seconds))
                    shares[name].append(samples[name][-1] / samples["ceiling"][-1])
        ceiling = statistics.median(samples["ceiling"])
        print(
            f"[{backend}] HTTP events page, ceiling app, server on one core: {ceiling:,.0f}"
            f" pages/s (median of {rounds} rounds: "
            + ", ".join(f"{rps:,.0f}" for rps in samples["ceiling"])
            + ")"
        )
        for name in list(targets)[1:]:
            rates[name] = rps = statistics.median(samples[name])
            print(
                f"[{backend}] HTTP events page ({name}), server on one core: {rps:,.0f}"
                f" pages/s, {statistics.median(shares[name]):.2f} of the ceiling (by round: "
                + ", ".join(f"{share:.2f}" for share in shares[name])
                + ")"
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
    parser.add_argument("--http-seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", action="store_true")
    parser.add_argument("--baseline-src", help="also serve openft from this src/ directory")
    parser.add_argument("--serve-ceiling", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    random.seed(7)
    if args.serve_ceiling:
        serve_ceiling(args.serve_ceiling)
        return
    rates = {
        backend.strip(): run(
            backend.strip(),
            args.events,
            args.http_seconds,
            args.rounds,
            args.variants,
            args.baseline_src,
        )
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
