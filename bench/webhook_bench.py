"""Webhook delivery benchmark: deliveries/s to 100 healthy receivers, with and without
one slow receiver among them (it trickles its answer a byte at a time, so every try to
it runs to the try's time limit).

Prints, per case: the healthy receivers' deliveries/s (all of them, from the moment the
events are due to the last arrival), and the time from due to arrival, p50 and p99.
The sender is openft's own delivery loop (WebhookService.deliver_due, called as
`openft serve` calls it) on a SQLite file or PostgreSQL; the receivers run in a child
process (so that they do not share the sender's interpreter lock), each its own HTTP
server on loopback, allowed by the operator's list as internal receivers would be.

Usage: python bench/webhook_bench.py [--backend sqlite|postgres] [--events 20]
       [--healthy 100] [--concurrency 16] [--try-seconds 10]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path

from openft.domain.entities import BaseModel, JobStatus, KeyScope
from openft.domain.webhook_addresses import AllowedHosts
from openft.services.webhooks import WebhookService, queue_terminal
from openft.settings import Settings
from openft.store.database import sqlite_url
from openft.testing.databases import (
    create_postgres_database,
    drop_postgres_database,
    postgres_admin_url,
)
from openft.testing.webhook_receivers import Receiver, serving
from openft.wiring import build_services

POLL_SECONDS = 1.0  # how often the loop looks for due deliveries (the server's default)


def receivers(healthy: int, slow: int, expected: int, pipe: Connection, stop: Event) -> None:
    """In a child process: the receivers; sends their URLs, then the healthy ones'
    arrival times (monotonic, which is one clock for every process) once all arrived."""
    hosts = [Receiver() for _ in range(healthy)]
    hosts += [Receiver("slow", trickle_seconds=1.0) for _ in range(slow)]
    with serving(*hosts):
        pipe.send([host.url for host in hosts])
        sent = False
        while not stop.wait(0.01):
            arrivals = [at for host in hosts[:healthy] for at, _h, _b in list(host.received)]
            if not sent and len(arrivals) >= expected:
                pipe.send(arrivals)
                sent = True


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_case(
    database_url: str, data_dir: Path, args: argparse.Namespace, slow: int
) -> tuple[float, float, float]:
    """(healthy deliveries/s, p50 s, p99 s) with `slow` slow receivers."""
    expected = args.events * args.healthy
    parent, child = multiprocessing.Pipe()
    stop = multiprocessing.Event()
    process = multiprocessing.Process(
        target=receivers, args=(args.healthy, slow, expected, child, stop), daemon=True
    )
    process.start()
    urls: list[str] = parent.recv()
    settings = Settings(data_dir=data_dir, database_url=database_url)
    services = build_services(settings, [BaseModel("tiny", "/nowhere")])
    webhooks = WebhookService(
        services.db,
        allowed_hosts=AllowedHosts.parse("127.0.0.1/32"),
        try_seconds=args.try_seconds,
        concurrency=args.concurrency,
    )
    looping = threading.Event()
    try:
        principal = services.keys.create("bench", KeyScope.PROJECT)[1].principal
        for url in urls:
            webhooks.add(principal, url)
        now = int(time.time())
        with services.db.write() as tx:
            for n in range(args.events):
                queue_terminal(
                    tx, principal.project_id, f"ftjob-bench{n}", JobStatus.SUCCEEDED, now
                )

        def loop() -> None:  # as the server's webhook loop runs it (from its first look)
            while True:
                while webhooks.deliver_due() and not looping.is_set():
                    pass
                if looping.wait(POLL_SECONDS):
                    return

        started = time.monotonic()
        threading.Thread(target=loop, daemon=True).start()
        if not parent.poll(args.events * args.try_seconds + 120):
            raise RuntimeError("the healthy deliveries did not all arrive")
        arrivals: list[float] = parent.recv()
    finally:
        looping.set()
        stop.set()
        process.join(10)
        webhooks.close()
        services.close()
    waits = [at - started for at in arrivals]
    return expected / max(waits), percentile(waits, 0.5), percentile(waits, 0.99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--healthy", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--try-seconds", type=float, default=10.0)
    args = parser.parse_args()
    # Each try to the slow receiver logs a warning; the table is what this prints.
    logging.getLogger("openft.services.webhooks").setLevel(logging.ERROR)
    print(
        f"{args.events} events to {args.healthy} healthy receivers ({args.backend},"
        f" {args.concurrency} senders, {args.try_seconds:g} s per try)"
    )
    print("case | healthy deliveries/s | due → arrival p50 | p99")
    for slow in (0, 1):
        with tempfile.TemporaryDirectory() as tmp:
            admin = postgres_admin_url() if args.backend == "postgres" else None
            if args.backend == "postgres" and admin is None:
                raise SystemExit("set OPENFT_TEST_POSTGRES_URL to the PostgreSQL server")
            database_url = create_postgres_database(admin) if admin else sqlite_url(Path(tmp))
            try:
                rate, p50, p99 = run_case(database_url, Path(tmp), args, slow)
            finally:
                if admin:
                    drop_postgres_database(admin, database_url)
        case = f"{args.healthy} healthy" + (f" + {slow} slow" if slow else "")
        print(f"{case} | {rate:.0f} | {p50 * 1000:.0f} ms | {p99 * 1000:.0f} ms")


if __name__ == "__main__":
    main()
