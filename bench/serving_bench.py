"""Chat completions benchmark: the embedded engine through the API against plain
transformers on the same model, adapter switching, and first tokens under concurrency.

Builds a small random Llama-style model locally (nothing is downloaded), starts
`openft serve` with its embedded worker on SQLite, trains two LoRA adapters on it (two
short jobs), then prints:
- generation tokens/s of one greedy request through the API (the official SDK, not
  streamed and streamed) and of `model.generate` in this process on the same model and
  prompt, one after the other (the server idle meanwhile), and their ratio;
- the cost of switching adapters: median latency of one-token requests that alternate
  between the two fine-tuned models, less that of requests to one of them (after both
  are loaded);
- first-token latency (p50, max) of CONCURRENT streams started together, over the two
  adapters and the base, and the tokens/s they get together.

Usage: python bench/serving_bench.py [--hidden 512] [--layers 8] [--tokens 200]
       [--concurrent 8]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI, OpenAI

from openft.store.database import sqlite_url
from openft.testing.data import repeat_file
from openft.testing.server import running_server, wait_until
from openft.training.tiny import build_tiny_model

PROMPT = "Tell me about the quick brown fox."
MESSAGES: Any = [{"role": "user", "content": PROMPT}]
ROUNDS = 5


def train(client: OpenAI, times: int) -> str:
    upload = client.files.create(file=("r.jsonl", repeat_file(times=times)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="small", training_file=upload.id, hyperparameters={"n_epochs": 1, "batch_size": 4}
    )

    def done() -> Any:
        current = client.fine_tuning.jobs.retrieve(job.id)
        return current if current.status in ("succeeded", "failed", "cancelled") else None

    finished = wait_until(done, 1800, 1, f"job {job.id}")
    assert finished.status == "succeeded", finished.error
    return str(finished.fine_tuned_model)


def api_rate(client: OpenAI, model: str, tokens: int, stream: bool) -> tuple[float, int]:
    """tokens/s and tokens of one greedy request through the API."""
    started = time.perf_counter()
    if stream:
        chunks = list(
            client.chat.completions.create(
                model=model,
                messages=MESSAGES,
                temperature=0,
                max_tokens=tokens,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        usage = chunks[-1].usage
    else:
        usage = client.chat.completions.create(
            model=model, messages=MESSAGES, temperature=0, max_tokens=tokens
        ).usage
    elapsed = time.perf_counter() - started
    assert usage is not None
    return usage.completion_tokens / elapsed, usage.completion_tokens


def generate_rate(model_dir: Path, tokens: int) -> tuple[float, int]:
    """tokens/s and tokens of `model.generate` on the same model and prompt, here."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(model_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()
    rendered: Any = tokenizer.apply_chat_template(
        MESSAGES, tokenize=True, add_generation_prompt=True
    )
    ids = torch.tensor([list(rendered["input_ids"] if hasattr(rendered, "keys") else rendered)])
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=4, do_sample=False)  # warm up
        started = time.perf_counter()
        out = model.generate(ids, max_new_tokens=tokens, do_sample=False)
        elapsed = time.perf_counter() - started
    produced = out.shape[1] - ids.shape[1]
    return produced / elapsed, produced


def one_token_latency(client: OpenAI, models: list[str], rounds: int) -> float:
    times = []
    for n in range(rounds):
        started = time.perf_counter()
        client.chat.completions.create(
            model=models[n % len(models)], messages=MESSAGES, temperature=0, max_tokens=1
        )
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def first_tokens(
    base_url: str, key: str, models: list[str], concurrent: int, tokens: int
) -> tuple[list[float], float]:
    client = AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0)
    started = time.perf_counter()

    async def one(model: str) -> tuple[float, int]:
        first = 0.0
        produced = 0
        stream = await client.chat.completions.create(
            model=model,
            messages=MESSAGES,
            temperature=1,
            seed=1,
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

    results = await asyncio.gather(*(one(models[n % len(models)]) for n in range(concurrent)))
    elapsed = time.perf_counter() - started
    await client.close()
    return [first for first, _ in results], sum(p for _, p in results) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--concurrent", type=int, default=8)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="openft-serving-bench-"))
    model_dir = build_tiny_model(
        root / "small",
        [repeat_file().decode()],
        hidden_size=args.hidden,
        layers=args.layers,
    )
    data = root / "data"
    with running_server(sqlite_url(data), data, f"small={model_dir}", worker=True) as server:
        client = OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)
        adapters = [train(client, 3), train(client, 2)]
        print(f"model: hidden {args.hidden}, {args.layers} layers; two adapters trained")
        for model in ("small", *adapters):  # load everything once
            client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=1)

        # Medians of ROUNDS runs each, taken in turn: two cores make single runs noisy.
        rates: dict[str, list[float]] = {"api": [], "streamed": [], "generate": []}
        for _ in range(ROUNDS):
            rate, api_tokens = api_rate(client, "small", args.tokens, stream=False)
            rates["api"].append(rate)
            rates["streamed"].append(api_rate(client, "small", args.tokens, stream=True)[0])
            rate, plain_tokens = generate_rate(model_dir, args.tokens)
            rates["generate"].append(rate)
        api, streamed, plain = (statistics.median(rates[k]) for k in rates)
        print(
            f"tokens/s, one greedy request of {api_tokens} tokens (median of {ROUNDS}): API "
            f"{api:.1f}, API streamed {streamed:.1f}, transformers generate ({plain_tokens} "
            f"tokens) {plain:.1f}; ratio API/generate {api / plain:.2f}, streamed/generate "
            f"{streamed / plain:.2f}"
        )

        same = one_token_latency(client, adapters[:1], 20)
        alternating = one_token_latency(client, adapters, 20)
        print(
            f"one-token request, median: same adapter {same * 1000:.1f} ms, alternating "
            f"adapters {alternating * 1000:.1f} ms: "
            f"switch {max(0.0, alternating - same) * 1000:.1f} ms"
        )

        firsts, rate = asyncio.run(
            first_tokens(server.base_url, server.key, ["small", *adapters], args.concurrent, 64)
        )
        print(
            f"{args.concurrent} concurrent streams of 64 tokens: first token p50 "
            f"{statistics.median(firsts) * 1000:.0f} ms, max {max(firsts) * 1000:.0f} ms; "
            f"{rate:.1f} tokens/s together"
        )


if __name__ == "__main__":
    main()
