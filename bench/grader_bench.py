"""Python grader throughput: what the bubblewrap sandbox costs per call.

The same grader (OpenAI's guide's fuzzy-match example: rapidfuzz's WRatio) is run:
- in process: the function called directly (what no sandbox would cost);
- a bare interpreter: `python -I -c pass` as a subprocess, no sandbox (the part of a
  sandboxed call that is only starting Python);
- sandboxed, one at a time: `Sandbox.run`, a fresh bwrap sandbox per call (and the same
  for a grader that imports nothing, to tell the sandbox from rapidfuzz's import; and
  that again with no sandbox started ahead of its call);
- sandboxed, concurrently: `grade_batch` over the samples, at most `--concurrency`
  sandboxes at once (the trainer's path).

Prints calls/s and the mean and p95 time per call of each, and the sandbox's cost per
call over the in-process function.

Usage: python bench/grader_bench.py [--calls 100] [--concurrency N (default: CPUs)]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from openft.graders import PythonLimits, Sample, Sandbox, grade_batch, parse

SOURCE = """
from rapidfuzz import fuzz, utils

def grade(sample, item) -> float:
    output_text = sample["output_text"]
    reference_answer = item["reference_answer"]
    return fuzz.WRatio(output_text, reference_answer, processor=utils.default_process) / 100.0
"""
TRIVIAL = "def grade(sample, item):\n    return 1.0\n"
SAMPLE = Sample("fuzzy wuzzy was a bear, fuzzy wuzzy had no hair")
ITEM = {"reference_answer": "Fuzzy Wuzzy was a bear; Fuzzy Wuzzy had no hair."}


def timed(calls: int, once: Callable[[], Any]) -> list[float]:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        once()
        times.append(time.perf_counter() - started)
    return times


def report(name: str, times: list[float], wall: float | None = None) -> None:
    wall = wall if wall is not None else sum(times)
    p95 = statistics.quantiles(times, n=20)[-1] if len(times) >= 20 else max(times)
    print(
        f"{name:<34} {len(times) / wall:>10.1f} calls/s   mean {statistics.mean(times) * 1e3:>9.3f}"
        f" ms   p95 {p95 * 1e3:>9.3f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=max(1, os.cpu_count() or 1))
    args = parser.parse_args()
    limits = PythonLimits.from_env()
    limits = PythonLimits(
        timeout_seconds=limits.timeout_seconds,
        memory_mb=limits.memory_mb,
        disk_mb=limits.disk_mb,
        concurrency=args.concurrency,
        bwrap=limits.bwrap,
    )
    print(f"{args.calls} calls, {os.cpu_count()} CPUs, concurrency {args.concurrency}")

    namespace: dict[str, Any] = {}
    exec(compile(SOURCE, "grader.py", "exec"), namespace)  # the benchmark's own source
    function = namespace["grade"]
    expected = function(SAMPLE.namespace(), ITEM)
    in_process = timed(args.calls * 100, lambda: function(SAMPLE.namespace(), ITEM))
    report("in process", in_process)

    bare = timed(
        args.calls, lambda: subprocess.run([sys.executable, "-I", "-c", "pass"], check=True)
    )
    report("bare interpreter (no sandbox)", bare)

    sandbox = Sandbox(limits)

    async def sequential() -> list[float]:
        times = []
        for _ in range(args.calls):
            started = time.perf_counter()
            outcome = await sandbox.run(SOURCE, SAMPLE.namespace(), ITEM)
            times.append(time.perf_counter() - started)
            assert outcome.reward == expected, outcome
        await sandbox.aclose()
        return times

    one_by_one = asyncio.run(sequential())
    report("sandboxed, one at a time", one_by_one)

    async def trivial() -> list[float]:
        times = []
        for _ in range(args.calls):
            started = time.perf_counter()
            await sandbox.run(TRIVIAL, SAMPLE.namespace(), ITEM)
            times.append(time.perf_counter() - started)
        await sandbox.aclose()
        return times

    report("sandboxed, a grader importing nothing", asyncio.run(trivial()))

    async def cold() -> list[float]:
        times = []
        for _ in range(args.calls):
            started = time.perf_counter()
            fresh = Sandbox(limits)  # nothing started ahead: each call starts its own
            await fresh.run(TRIVIAL, SAMPLE.namespace(), ITEM)
            times.append(time.perf_counter() - started)
            await fresh.aclose()
        return times

    report("  the same, none started ahead", asyncio.run(cold()))

    grader = parse({"type": "python", "name": "fuzzy", "source": SOURCE})
    started = time.perf_counter()
    results = grade_batch(grader, [SAMPLE] * args.calls, [ITEM] * args.calls, limits=limits)
    wall = time.perf_counter() - started
    assert all(r.reward == expected and not r.failed for r in results)
    # Each grade's time here includes its wait for a free sandbox: calls/s is the figure.
    print(
        f"{'sandboxed, ' + str(args.concurrency) + ' at once (grade_batch)':<34} "
        f"{args.calls / wall:>10.1f} calls/s"
    )

    cost = statistics.mean(one_by_one) - statistics.mean(in_process)
    startup = statistics.mean(bare)
    print(
        f"\nsandbox cost per call over in-process: {cost * 1e3:.1f} ms "
        f"(of which starting a bare interpreter: {startup * 1e3:.1f} ms; bwrap, imports "
        f"and the JSON exchange: {(cost - startup) * 1e3:.1f} ms)"
    )


if __name__ == "__main__":
    main()
