"""GRPO training throughput: a reinforcement job run through openft against TRL's
GRPOTrainer called directly in one process, on the same model, data and settings.

Builds a random-initialised causal LM (size by flags) and prompt-only rows, then:
1. direct: TRL's GRPOTrainer in a fresh process with the GRPOConfig an openft job of the
   same hyperparameters gets (`openft.training.grpo.grpo_arguments`), the same LoRA, and
   a plain Python reward function computing what the job's grader computes (the reply
   contains the row's keyword); tokens/s = tokens seen (prompts and completions) over
   the trainer's own runtime. A fresh process, as an openft job's trainer is: both pay
   the same first-step costs (CUDA kernels loaded and tuned), which a second run in a
   process that already trained would not;
2. openft: `openft serve` with its embedded worker, a reinforcement job with a
   string_check grader created with the openai SDK and followed to completion; tokens/s
   = the job's trained_tokens over the trainer's runtime in the job's log (the training
   loop with openft's grading through openft.graders, reporting and control checks).

Usage: python bench/grpo_bench.py [--hidden 256 --layers 4 --examples 64 --epochs 1
       --batch-size 8 --compute-multiplier 1 --completion-tokens 64 --repeat 2]
Runs on CUDA when there is one (bf16), else CPU. Each kind of run is repeated and the
best counts, so that noise from the machine counts less.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

KEYWORD = "the"
GRADER = {
    "type": "string_check",
    "name": "says_the",
    "input": "{{sample.output_text}}",
    "reference": "{{item.keyword}}",
    "operation": "like",
}


def dataset(n: int) -> bytes:
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    lines = []
    for i in range(n):
        question = " ".join(words[(i + k) % len(words)] for k in range(12))
        messages = [{"role": "user", "content": f"Continue: {question}"}]
        lines.append(json.dumps({"messages": messages, "keyword": KEYWORD}))
    return ("\n".join(lines) + "\n").encode()


def hyperparameters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "n_epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate_multiplier": 10,
        "compute_multiplier": args.compute_multiplier,
        "eval_interval": 10_000,  # no evaluation file: checkpoints only, at the end
        "eval_samples": 1,
        "max_length": args.completion_tokens,
    }


def direct_run(model_dir: Path, data: Path, args: argparse.Namespace) -> tuple[float, int, int]:
    """(tokens/s, tokens, steps) of TRL's GRPOTrainer run in a fresh process."""
    command = [sys.executable, __file__, "--direct", str(model_dir), str(data)]
    for name in ("examples", "epochs", "batch_size", "compute_multiplier", "completion_tokens"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    found = re.search(r"^DIRECT (.*)$", done.stdout, re.MULTILINE)
    if done.returncode or found is None:
        raise SystemExit(f"the direct run failed:\n{done.stderr[-4000:]}")
    rate, tokens, steps = json.loads(found.group(1))
    return float(rate), int(tokens), int(steps)


def direct_in_process(
    model_dir: Path, data: Path, args: argparse.Namespace
) -> tuple[float, int, int]:
    """(tokens/s, tokens, steps) of TRL's GRPOTrainer run in this process."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer  # type: ignore[attr-defined]

    from openft.domain.entities import Hyperparameters, MethodType
    from openft.domain.hyperparameters import resolve
    from openft.training.data import ITEM_COLUMN, prompt_dataset
    from openft.training.distributed import Group
    from openft.training.grpo import grpo_arguments
    from openft.training.spec import TrainingSpec

    hyper = resolve(
        Hyperparameters(reasoning_effort="default", **hyperparameters(args)),
        MethodType.REINFORCEMENT,
        args.examples,
    )
    out = tempfile.mkdtemp()
    spec = TrainingSpec(
        "bench",
        MethodType.REINFORCEMENT,
        str(model_dir),
        str(data),
        None,
        hyper,
        1,
        out,
        f"{out}/control",
        grader=GRADER,
    )
    rows = prompt_dataset(data, "bench")
    config = GRPOConfig(**grpo_arguments(spec, Group(0, 1, 0, "cpu", None), len(rows), False))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)

    def contains_keyword(completions: list[Any], **columns: Any) -> list[float | None]:
        keywords = [json.loads(item)["keyword"] for item in columns[ITEM_COLUMN]]
        return [float(k in c[0]["content"]) for c, k in zip(completions, keywords, strict=True)]

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[contains_keyword],
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        # The job's adapter: openft's defaults (rank 8, alpha 16, every linear layer).
        peft_config=LoraConfig(
            r=hyper.lora_rank,
            lora_alpha=hyper.lora_alpha,
            lora_dropout=hyper.lora_dropout,
            target_modules=hyper.lora_target_modules,
            task_type="CAUSAL_LM",
        ),
    )
    result = trainer.train()
    runtime = float(result.metrics["train_runtime"])
    tokens = int(trainer.state.num_input_tokens_seen)
    return tokens / runtime, tokens, int(trainer.state.global_step)


def openft_run(model_dir: Path, data: Path, args: argparse.Namespace) -> tuple[float, int, float]:
    """(tokens/s inside the trainer, tokens, wall seconds from create to succeeded)."""
    from openai import OpenAI

    from openft.store.database import sqlite_url
    from openft.testing.server import running_server

    work = Path(tempfile.mkdtemp(prefix="openft-grpo-bench-"))
    with running_server(sqlite_url(work), work, f"bench={model_dir}", worker=True) as server:
        client = OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)
        upload = client.files.create(file=("bench.jsonl", data.read_bytes()), purpose="fine-tune")
        started = time.monotonic()
        method: Any = {
            "type": "reinforcement",
            "reinforcement": {"grader": GRADER, "hyperparameters": hyperparameters(args)},
        }
        job = client.fine_tuning.jobs.create(
            model="bench", training_file=upload.id, seed=1, method=method
        )
        while job.status not in ("succeeded", "failed", "cancelled"):
            time.sleep(2)  # a light poll: the server shares this machine's cores
            job = client.fine_tuning.jobs.retrieve(job.id)
        wall = time.monotonic() - started
        if job.status != "succeeded":
            raise SystemExit(f"job {job.status}: {job.error}")
        log = (work / "work" / job.id / "attempt-1" / "trainer.log").read_text()
        runtime = max(float(r) for r in re.findall(r"'train_runtime': '?([0-9.]+)", log))
        tokens = int(job.trained_tokens or 0)
        return tokens / runtime, tokens, wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per step")
    parser.add_argument("--compute-multiplier", type=float, default=1.0)
    parser.add_argument("--completion-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each kind; the best counts")
    parser.add_argument("--direct", nargs=2, metavar=("MODEL", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.direct:  # the direct run's own process
        result = direct_in_process(Path(args.direct[0]), Path(args.direct[1]), args)
        print("DIRECT " + json.dumps(result), flush=True)
        return

    import torch

    from openft.domain.hyperparameters import generations
    from openft.training.tiny import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="openft-grpo-bench-"))
    data = work / "bench.jsonl"
    data.write_bytes(dataset(args.examples))
    model_dir = build_tiny_model(
        work / "model",
        [data.read_text()],
        vocab_size=1024,
        hidden_size=args.hidden,
        layers=args.layers,
    )
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(
        f"device: {device}; model: hidden {args.hidden}, {args.layers} layers; "
        f"{args.examples} prompts x {args.epochs} epochs, {args.batch_size} prompts a step, "
        f"{generations(args.compute_multiplier)} completions each of at most "
        f"{args.completion_tokens} tokens"
    )
    direct_runs, through_runs = [], []
    for _ in range(args.repeat):  # taken in turn, so that drift on the machine hits both
        direct_runs.append(direct_run(model_dir, data, args))
        through_runs.append(openft_run(model_dir, data, args))
    direct, tokens, steps = max(direct_runs)
    through, through_tokens, wall = max(through_runs)
    print(f"direct TRL GRPOTrainer: {direct:,.0f} tokens/s ({tokens:,} tokens, {steps} steps)")
    print(
        f"through openft (server, worker, trainer subprocess, string_check grader): "
        f"{through:,.0f} tokens/s ({through_tokens:,} tokens; ratio {through / direct:.3f}); "
        f"job wall time {wall:.1f} s"
    )


if __name__ == "__main__":
    main()
