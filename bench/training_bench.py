"""Training throughput: a job run through openft against the same TRL run in one process.

Builds a random-initialised causal LM (size by flags) and a synthetic chat dataset, then:
1. direct: TRL's SFTTrainer in this process, on data tokenized exactly as openft does,
   with the same LoRA and training arguments; tokens/s from the trainer's own runtime;
2. openft: `openft serve` with its embedded worker, a job created with the openai SDK,
   followed to completion; tokens/s from the trainer's runtime in the job's log (the
   training loop with openft's reporting and control checks in it);
3. the cost of event reporting per step: the same direct run with openft's reporting
   callback attached (writing to a pipe nobody reads is not possible, so to /dev/null),
   minus the run without it, per step;
4. one job on 1 and on 2 processes (`OPENFT_NPROC_PER_NODE`, torchrun; the same global
   batch): tokens/s of each from the trainer's runtime. On a CPU-only machine the two
   ranks share the cores one thread each and add a gloo all-reduce per step, so this
   measures the overhead of the multi-process path, not a speed-up (that takes one GPU
   per rank).

Usage: python bench/training_bench.py [--hidden 256 --layers 4 --examples 256 --epochs 2]
       python bench/training_bench.py --only-processes   (step 4 alone)
Runs on CUDA when there is one (bf16), else CPU. Each kind of run is repeated
(--repeat, 3) and the best counts, so that noise from the machine counts less.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from pathlib import Path


def dataset(n: int) -> bytes:
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    lines = []
    for i in range(n):
        question = " ".join(words[(i + k) % len(words)] for k in range(12))
        answer = " ".join(words[(i * 3 + k) % len(words)] for k in range(24))
        lines.append(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": f"Continue: {question}"},
                        {"role": "assistant", "content": answer},
                    ]
                }
            )
        )
    return ("\n".join(lines) + "\n").encode()


def direct_run(
    model_dir: Path, data: Path, args: argparse.Namespace, reporting: bool
) -> tuple[float, int, int]:
    """(tokens/s, tokens, steps) of the run in this process."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer  # type: ignore[attr-defined]

    from openft.domain.entities import Hyperparameters, MethodType
    from openft.training.data import chat_dataset
    from openft.training.protocol import Reporter
    from openft.training.run import _callback
    from openft.training.spec import TrainingSpec

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    rows = chat_dataset(tokenizer, data, "bench", 512)
    tokens = sum(len(r["input_ids"]) for r in rows) * args.epochs
    out = tempfile.mkdtemp()
    config = SFTConfig(
        output_dir=out,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        learning_rate=2e-3,
        logging_steps=1,
        # Checkpoint at each epoch's end, as an openft job does by default.
        save_strategy="epoch",
        report_to=[],
        seed=1,
        data_seed=1,
        disable_tqdm=True,
        max_length=512,
        bf16=dtype == torch.bfloat16,
    )
    callbacks = []
    if reporting:
        spec = TrainingSpec(
            "bench",
            MethodType.SUPERVISED,
            str(model_dir),
            str(data),
            None,
            Hyperparameters(),
            1,
            out,
            os.path.join(out, "control"),
        )
        callback = _callback(spec, Reporter(open(os.devnull, "w")), tokens // args.epochs)
        callbacks.append(callback)
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=LoraConfig(
            r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"
        ),
        callbacks=callbacks,
    )
    if reporting:
        callbacks[0].trainer = trainer
    result = trainer.train()
    runtime = float(result.metrics["train_runtime"])
    return tokens / runtime, tokens, int(trainer.state.global_step)


def openft_run(
    model_dir: Path, data: Path, args: argparse.Namespace, processes: int = 1
) -> tuple[float, float]:
    """(tokens/s inside the trainer, wall seconds from create to succeeded), the job
    trained on `processes` processes."""
    from openai import OpenAI

    from openft.store.database import sqlite_url
    from openft.testing.server import running_server

    work = Path(tempfile.mkdtemp(prefix="openft-train-bench-"))
    env = {"OPENFT_NPROC_PER_NODE": str(processes)}
    with running_server(
        sqlite_url(work), work, f"bench={model_dir}", worker=True, env=env
    ) as server:
        client = OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)
        upload = client.files.create(file=("bench.jsonl", data.read_bytes()), purpose="fine-tune")
        started = time.monotonic()
        job = client.fine_tuning.jobs.create(
            model="bench",
            training_file=upload.id,
            hyperparameters={
                "n_epochs": args.epochs,
                "batch_size": args.batch_size,
                "learning_rate_multiplier": 10,
            },
        )
        while job.status not in ("succeeded", "failed", "cancelled"):
            time.sleep(2)  # a light poll: the server shares this machine's cores
            job = client.fine_tuning.jobs.retrieve(job.id)
        wall = time.monotonic() - started
        if job.status != "succeeded":
            raise SystemExit(f"job {job.status}: {job.error}")
        log = (work / "work" / job.id / "attempt-1" / "trainer.log").read_text()
        # Every rank prints its runtime: the slowest is the job's.
        runtime = max(float(r) for r in re.findall(r"'train_runtime': '?([0-9.]+)", log))
        return float(job.trained_tokens or 0) / runtime, wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each kind; the best counts")
    parser.add_argument("--skip-openft", action="store_true", help="only the in-process runs")
    parser.add_argument(
        "--only-processes", action="store_true", help="only the job on 1 and on 2 processes"
    )
    args = parser.parse_args()

    import torch

    from openft.training.tiny import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="openft-train-bench-"))
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
        f"{args.examples} examples x {args.epochs} epochs, batch {args.batch_size}"
    )
    if args.only_processes:
        compare_processes(model_dir, data, args)
        return
    direct_run(model_dir, data, args, reporting=False)  # warm caches (kernels, files)
    plain_runs = [direct_run(model_dir, data, args, reporting=False) for _ in range(args.repeat)]
    plain, tokens, steps = max(plain_runs)
    reported = max(direct_run(model_dir, data, args, reporting=True)[0] for _ in range(args.repeat))
    cost = (tokens / reported - tokens / plain) / steps * 1000
    print(f"direct TRL run: {plain:,.0f} tokens/s ({tokens:,} tokens, {steps} steps)")
    print(f"direct run with openft's reporting callback: {reported:,.0f} tokens/s")
    print(f"event reporting cost in the training loop: {cost:.2f} ms/step")
    if not args.skip_openft:
        through, wall = max(openft_run(model_dir, data, args) for _ in range(args.repeat))
        print(
            f"through openft (server, worker, trainer subprocess): {through:,.0f} tokens/s "
            f"(ratio {through / plain:.3f}); job wall time {wall:.1f} s"
        )
        compare_processes(model_dir, data, args)


def compare_processes(model_dir: Path, data: Path, args: argparse.Namespace) -> None:
    """The same job through openft on one process and on two (runs taken in turn)."""
    import torch

    if torch.cuda.device_count() == 1:
        # Two ranks need a GPU each (NCCL refuses two ranks on one device).
        print("one job on 2 processes: skipped (this machine has one GPU)")
        return
    runs: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    for _ in range(args.repeat):
        for processes in runs:
            runs[processes].append(openft_run(model_dir, data, args, processes))
    (one, one_wall), (two, two_wall) = max(runs[1]), max(runs[2])
    print(f"one job on 1 process: {one:,.0f} tokens/s (job wall time {one_wall:.1f} s)")
    print(
        f"one job on 2 processes (torchrun): {two:,.0f} tokens/s (ratio {two / one:.2f}; "
        f"job wall time {two_wall:.1f} s)"
    )
    if not torch.cuda.is_available():
        print(
            "  (CPU only: the two ranks share this machine's cores, one thread each, and "
            "all-reduce gradients over gloo every step; this is the multi-process path's "
            "overhead, not a speed-up, which needs one GPU per rank)"
        )


if __name__ == "__main__":
    main()
