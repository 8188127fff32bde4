"""Chat first tokens beside a long request from another project: what one project's
`n=64, max_tokens=200` costs another project's short requests.

Builds a small random model locally (nothing is downloaded), starts `openft serve
--no-worker` on SQLite with the embedded engine, and measures the first-token latency of
short streamed requests (`max_tokens=5`, one every 200 ms) of project B:
- idle: nothing else running;
- beside project A's long request (another project: turns are shared between projects);
- beside the same long request sent with B's own key (one project: B's requests wait
  their turn among its own 64 choices, which is what fairness between projects is not
  meant to fix).

Prints p50, p99 and max of each, and A's tokens/s meanwhile.

Usage: python bench/chat_fairness_bench.py [--short 20] [--n 64] [--tokens 200]
       [--hidden 256] [--layers 4]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

from openft.store.database import sqlite_url
from openft.testing.data import repeat_file
from openft.testing.server import openft_command, running_server
from openft.training.tiny import build_tiny_model

MESSAGES: Any = [{"role": "user", "content": "Tell me about the quick brown fox."}]


async def first_token(client: AsyncOpenAI) -> float:
    started = time.perf_counter()
    stream = await client.chat.completions.create(
        model="small", messages=MESSAGES, max_tokens=5, temperature=1, stream=True
    )
    first = None
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
    return first if first is not None else time.perf_counter() - started


async def long_request(client: AsyncOpenAI, n: int, tokens: int) -> tuple[int, float]:
    started = time.perf_counter()
    answer = await client.chat.completions.create(
        model="small", messages=MESSAGES, max_tokens=tokens, n=n, temperature=1
    )
    assert answer.usage is not None
    return answer.usage.completion_tokens, time.perf_counter() - started


async def shorts(client: AsyncOpenAI, count: int) -> list[float]:
    tasks = []
    for _ in range(count):
        tasks.append(asyncio.create_task(first_token(client)))
        await asyncio.sleep(0.2)
    return list(await asyncio.gather(*tasks))


def summary(label: str, latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (
        f"{label:>28}: first token p50 {statistics.median(ordered) * 1000:7.0f} ms, "
        f"p99 {p99 * 1000:7.0f} ms, max {ordered[-1] * 1000:7.0f} ms"
    )


async def run(base_url: str, key_a: str, key_b: str, args: argparse.Namespace) -> None:
    a = AsyncOpenAI(base_url=base_url, api_key=key_a, max_retries=0, timeout=600)
    b = AsyncOpenAI(base_url=base_url, api_key=key_b, max_retries=0, timeout=600)
    await first_token(b)  # loads the model
    print(summary("idle", await shorts(b, args.short)))
    for label, long_client in (("beside another project's", a), ("beside its own", b)):
        big = asyncio.create_task(long_request(long_client, args.n, args.tokens))
        await asyncio.sleep(0.5)  # the long request is running
        latencies = await shorts(b, args.short)
        tokens, took = await big
        print(
            summary(f"{label} n={args.n}", latencies) + f"; the long one {tokens / took:.0f} tok/s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", type=int, default=20)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="openft-fairness-") as scratch:
        root = Path(scratch)
        model = build_tiny_model(
            root / "small", [repeat_file().decode()], hidden_size=args.hidden, layers=args.layers
        )
        url = sqlite_url(root)
        with running_server(url, root, f"small={model}") as server:
            key_b = openft_command("keys", "create", "--project", "b", *server.location())
            asyncio.run(run(server.base_url, server.key, key_b, args))


if __name__ == "__main__":
    main()
