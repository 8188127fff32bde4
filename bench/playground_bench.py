"""Playground benchmark: time to first token of three streamed answers started together
(what the console's playground sends for three models) against one streamed answer
alone, on the tiny model.

Starts `openft serve` with its embedded worker on SQLite, trains one short job on the
tiny model (a fine-tuned model and its checkpoints), loads the three models once, then
takes ROUNDS rounds, in turn: one streamed answer alone (each of the three models in
rotation), then the three models' streamed answers at once, as the playground sends them
(`stream: true`, `stream_options.include_usage`, the same prompt and max tokens). The
clock of each answer starts when its request is sent; its first token is the first chunk
with content. Prints the medians and the ratio (target: three together <= 1.5x alone).
With --pin, as the other benchmarks measure: the server (every thread) on CPU 0, this
client on CPU 1. With --same-model, the three answers are all the base model's (no job
is trained): what the server's path costs per request, without adapters. The client is
plain HTTP (httpx, the SSE lines parsed as they come), as the console's fetch is; with
--sdk the openai SDK, whose request building and per-chunk models, three streams on the
client's one core, add their own delay to the three (about 2 ms a request here).

Usage: python bench/playground_bench.py [--rounds 20] [--tokens 64] [--pin] [--same-model]
       [--sdk]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from openai import AsyncOpenAI, OpenAI

from openft import sse_lines
from openft.store.database import sqlite_url
from openft.testing.data import toy_chat_file
from openft.testing.server import running_server, wait_until
from openft.training.tiny import build_tiny_model

MESSAGES: Any = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Tell me about the quick brown fox."},
]


def train(client: OpenAI) -> tuple[str, str]:
    """The fine-tuned model and a checkpoint of one short job on the tiny model."""
    upload = client.files.create(file=("t.jsonl", toy_chat_file(16)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=upload.id,
        hyperparameters={"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 10},
    )

    def done() -> Any:
        current = client.fine_tuning.jobs.retrieve(job.id)
        return current if current.status in ("succeeded", "failed", "cancelled") else None

    finished = wait_until(done, 600, 0.5, f"job {job.id}")
    assert finished.status == "succeeded", finished.error
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    return str(finished.fine_tuned_model), checkpoints[-1].fine_tuned_model_checkpoint


async def first_token_sdk(client: AsyncOpenAI, model: str, tokens: int) -> tuple[float, int]:
    """Seconds from sending to the first content, and the tokens the answer had (openai)."""
    started = time.perf_counter()
    first = 0.0
    produced = 0
    stream = await client.chat.completions.create(
        model=model,
        messages=MESSAGES,
        temperature=1,
        max_tokens=tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and not first:
            first = time.perf_counter() - started
        if chunk.usage:
            produced = chunk.usage.completion_tokens
    return first, produced


async def first_token_http(client: httpx.AsyncClient, model: str, tokens: int) -> tuple[float, int]:
    """`first_token_sdk` as the console's playground asks: one POST, its server-sent
    events read as they come (a browser's fetch, not the SDK's models per chunk)."""
    body = {
        "model": model,
        "messages": MESSAGES,
        "temperature": 1,
        "max_tokens": tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = 0.0
    produced = 0
    async with client.stream("POST", "chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in sse_lines.alines(response.aiter_bytes()):
            if not line.startswith("data: {"):
                continue
            chunk = orjson.loads(line[6:])
            choices = chunk.get("choices")
            if choices and choices[0]["delta"].get("content") and not first:
                first = time.perf_counter() - started
            if chunk.get("usage"):
                produced = chunk["usage"]["completion_tokens"]
    return first, produced


async def measure(
    base_url: str, key: str, models: list[str], rounds: int, tokens: int, sdk: bool
) -> tuple[list[float], list[float], list[float], int]:
    """(alone, the slowest of three together, every one of the three) first tokens."""
    if sdk:
        openai = AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0)

        async def first_token(model: str, tokens: int) -> tuple[float, int]:
            return await first_token_sdk(openai, model, tokens)

        close = openai.close
    else:
        http = httpx.AsyncClient(
            base_url=f"{base_url}/", headers={"Authorization": f"Bearer {key}"}, timeout=60
        )

        async def first_token(model: str, tokens: int) -> tuple[float, int]:
            return await first_token_http(http, model, tokens)

        close = http.aclose
    alone: list[float] = []
    slowest: list[float] = []
    together: list[float] = []
    produced = 0
    try:
        for model in models:  # load each once
            await first_token(model, 1)
        for n in range(rounds):
            # An answer with no text at all (its first token the end) has no first token:
            # it is left out, not counted as 0 ms.
            first, count = await first_token(models[n % len(models)], tokens)
            alone += [first] if first else []
            produced += count
            three = await asyncio.gather(*(first_token(m, tokens) for m in models))
            firsts = [f for f, _ in three if f]
            together += firsts
            slowest += [max(firsts)] if firsts else []
            produced += sum(c for _, c in three)
    finally:
        await close()
    return alone, slowest, together, produced


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--pin", action="store_true", help="server on CPU 0, client on CPU 1")
    parser.add_argument("--same-model", action="store_true", help="three of the base model")
    parser.add_argument(
        "--sdk", action="store_true", help="the openai SDK as the client, not plain HTTP"
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="openft-playground-bench-"))
    model_dir = build_tiny_model(root / "tiny", [toy_chat_file().decode()])
    data = root / "data"
    worker = not args.same_model
    with running_server(sqlite_url(data), data, f"tiny={model_dir}", worker=worker) as server:
        if args.same_model:
            models = ["tiny"] * 3
        else:
            client = OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)
            tuned, checkpoint = train(client)
            models = [tuned, "tiny", checkpoint]
        print(f"models: {', '.join(models)}")
        if args.pin:
            pid = str(server.process.pid)
            subprocess.run(["taskset", "-a", "-p", "-c", "0", pid], check=True, capture_output=True)
            os.sched_setaffinity(0, {1})
            print("server pinned to CPU 0, client to CPU 1")
        alone, slowest, together, produced = asyncio.run(
            measure(server.base_url, server.key, models, args.rounds, args.tokens, args.sdk)
        )
    ms = 1000
    one = statistics.median(alone)
    three = statistics.median(slowest)
    print(
        f"first token, one streamed answer alone: median {one * ms:.1f} ms "
        f"(min {min(alone) * ms:.1f}, max {max(alone) * ms:.1f}) over {args.rounds} rounds"
    )
    print(
        f"first token, three streamed answers together: median of the slowest "
        f"{three * ms:.1f} ms, median of all {statistics.median(together) * ms:.1f} ms "
        f"(max {max(together) * ms:.1f})"
    )
    print(
        f"ratio (slowest of three / alone): {three / one:.2f}x (target <= 1.5x); "
        f"{produced} tokens streamed in all, up to {args.tokens} an answer"
    )


if __name__ == "__main__":
    main()
