"""Console benchmark: from "Sign in" to a job page whose charts hold every step, for a
job with STEPS metrics events, in Debian's Chromium (Playwright), and the bytes it
transferred.

The job's events are written through the service layer (as a worker's reports would be,
without training for hours), then the job is cancelled so that its stream ends. The page
opens at the job's URL, signs in, and the clock stops when both charts are drawn up to
step STEPS (the charts load the job's metrics as series from openft's metrics endpoint,
downsampled by the server keeping every extreme, then follow the events stream from the
last event those include).

Usage: python bench/console_bench.py [--steps 100000] [--screenshot docs/console.png]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from playwright.sync_api import Request, sync_playwright

from openft.domain.entities import BaseModel, EventDraft, EventType, KeyScope
from openft.settings import Settings
from openft.store.database import sqlite_url
from openft.testing import queued_job
from openft.testing.server import running_server
from openft.wiring import build_services

CHROMIUM = os.environ.get("OPENFT_CHROMIUM", "/usr/bin/chromium")
BATCH = 1000


def metrics(step: int, total: int) -> EventDraft:
    loss = round(2.5 / (1 + step / 2000) + random.random() * 0.08, 4)
    data: dict[str, float | int] = {
        "step": step,
        "total_steps": total,
        "train_loss": loss,
        "train_mean_token_accuracy": round(min(1.0, 0.3 + step / total * 0.6), 4),
    }
    if step % 100 == 0:
        data["valid_loss"] = round(loss + 0.1, 4)
        data["valid_mean_token_accuracy"] = round(min(1.0, 0.25 + step / total * 0.6), 4)
    return EventDraft(
        f"Step {step}/{total}: training loss={loss:.4f}", type=EventType.METRICS, data=data
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="openft-console-bench-"))
    url = sqlite_url(work)
    services = build_services(
        Settings(data_dir=work, database_url=url), [BaseModel("tiny", "unused")]
    )
    try:
        key, record = services.keys.create("bench", KeyScope.PROJECT)
        job_id = queued_job(services, record.principal)
        for start in range(1, args.steps + 1, BATCH):
            end = min(args.steps, start + BATCH - 1)
            services.events.append(job_id, [metrics(s, args.steps) for s in range(start, end + 1)])
        services.jobs.cancel(record.principal, job_id)
        print(f"job {job_id}: {args.steps:,} metrics events")
        with running_server(url, work) as server, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.goto(f"{server.root_url}/#/jobs/{job_id}")
            page.get_by_label("API key").fill(key)
            sizes: list[int] = []

            def finished(request: Request) -> None:
                size = request.sizes()
                sizes.append(size["responseBodySize"] + size["responseHeadersSize"])

            page.on("requestfinished", finished)
            started = time.perf_counter()
            page.get_by_role("button", name="Sign in").click()
            for name in ("Training and validation loss", "Token accuracy"):
                selector = f'[aria-label="{name}"][data-last-step="{args.steps}"] canvas'
                page.locator(selector).wait_for(timeout=120_000)
            elapsed = time.perf_counter() - started
            timings = page.evaluate(
                """() => performance.getEntriesByType("resource")
                    .filter(e => e.name.includes("/metrics?") || e.name.includes("stream=true"))
                    .map(e => [e.name.split("/").pop().split("?")[0], Math.round(e.requestStart),
                               Math.round(e.responseStart), Math.round(e.responseEnd)])"""
            )
            print(f"series and stream (request, first byte, last byte; ms since load): {timings}")
            clicked = page.evaluate("performance.now()") - elapsed * 1000
            print(f"sign-in clicked at about {clicked:.0f} ms")
            print(
                f"sign-in to both charts drawn with {args.steps:,} steps: {elapsed:.2f} s "
                f"(target: 100k <= 1 s, 1M <= 2.5 s); {len(sizes)} requests, "
                f"{sum(sizes) / 1e6:.1f} MB transferred"
            )
            if args.screenshot:
                page.screenshot(path=str(args.screenshot), full_page=False)
                print(f"screenshot: {args.screenshot}")
            browser.close()
    finally:
        services.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
