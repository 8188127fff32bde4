"""`openft demo` (and `make demo`): the whole flow, offline, on the embedded default.

Builds a tiny model locally (a random-initialised small causal LM and a tokenizer
trained on local text: nothing is downloaded), starts `openft serve` with its embedded
worker on SQLite in a fresh data directory, and with the official `openai` SDK uploads a
small chat dataset, creates a fine-tuning job, follows its events live (server-sent
events) to completion and prints the curve of the training loss. Then it asks the
fine-tuned model and the base model the same question (chat completions) and prints both
answers.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from openft.cli.client import Client
from openft.testing.server import local_server, openft_command

SAMPLE = [
    ("What is the capital of France?", "Paris."),
    ("What is 2 + 2?", "4."),
    ("Name a primary colour.", "Red."),
    ("What is the boiling point of water at sea level?", "100 degrees Celsius."),
    ("Who wrote Hamlet?", "William Shakespeare."),
    ("What is the largest planet?", "Jupiter."),
    ("How many legs does a spider have?", "Eight."),
    ("What gas do plants absorb?", "Carbon dioxide."),
    ("What is the square root of 81?", "9."),
    ("Which ocean is the largest?", "The Pacific."),
    ("What language is spoken in Brazil?", "Portuguese."),
    ("How many days are in a leap year?", "366."),
]
HYPERPARAMETERS: Any = {"n_epochs": 8, "batch_size": 4, "learning_rate_multiplier": 50}
BAR_WIDTH = 50


def sample_dataset() -> bytes:
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "Answer briefly."},
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
        for question, answer in SAMPLE
    ]
    return ("\n".join(lines) + "\n").encode()


def loss_curve(points: list[tuple[int, float]]) -> str:
    """One bar per step, scaled to the largest loss."""
    top = max(loss for _step, loss in points) or 1.0
    return "\n".join(
        f"  step {step:>4}  {loss:7.3f}  {'#' * max(1, round(loss / top * BAR_WIDTH))}"
        for step, loss in points
    )


def follow(base: str, key: str, job_id: str) -> None:
    """Print the job's events as they are committed, oldest first, until it ends (the
    events endpoint as server-sent events, as `openft events --follow` reads it)."""
    client = Client(f"{base}/v1", key)
    try:
        for event in client.follow(job_id):
            print(f"  [{event['level']:5}] {event['message']}")
    finally:
        client.close()


def main() -> None:
    try:
        from openai import OpenAI
    except ImportError:
        raise SystemExit("the demo uses the openai SDK: pip install 'openft[demo,train]'") from None
    from openft.training.tiny import build_tiny_model

    started = time.monotonic()
    data_dir = Path(os.environ.get("OPENFT_DEMO_DIR") or tempfile.mkdtemp(prefix="openft-demo-"))
    model_dir = build_tiny_model(
        data_dir / "base-models" / "tiny-demo", [sample_dataset().decode()]
    )
    print(f"built a tiny model locally in {model_dir}")
    key = openft_command("keys", "create", "--project", "demo", "--data-dir", str(data_dir))
    with local_server(data_dir, "--model", f"tiny-demo={model_dir}") as (base, _server):
        print(f"openft is serving on {base} (data and logs in {data_dir})")
        client = OpenAI(base_url=f"{base}/v1", api_key=key)
        upload = client.files.create(file=("sample.jsonl", sample_dataset()), purpose="fine-tune")
        print(f"uploaded {upload.filename}: {upload.id}")
        job = client.fine_tuning.jobs.create(
            model="tiny-demo",
            training_file=upload.id,
            suffix="demo",
            hyperparameters=HYPERPARAMETERS,
        )
        print(f"created {job.id}; its events, live:")
        follow(base, key, job.id)
        job = client.fine_tuning.jobs.retrieve(job.id)
        if job.status != "succeeded":
            raise SystemExit(f"the job ended {job.status}: {job.error}")
        points = [
            (int(e.data["step"]), float(e.data["train_loss"]))  # type: ignore[index]
            for e in client.fine_tuning.jobs.list_events(job.id, limit=1000)
            if e.type == "metrics"
        ]
        print("\ntraining loss by step:")
        print(loss_curve(sorted(points)))
        checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
        print(f"\nfine-tuned model: {job.fine_tuned_model} ({job.trained_tokens} tokens trained)")
        print(f"checkpoints: {', '.join(c.fine_tuned_model_checkpoint for c in checkpoints)}")
        archive = data_dir / "models" / job.id / "adapter.tar.gz"
        print(f"adapter (peft's files, as a tar.gz blob): {archive}")
        print(f"results file: {job.result_files[0]}")
        question, expected = SAMPLE[0]
        print(f"\nasked both models {question!r} (expected {expected!r}):")
        for label, model in (("fine-tuned", job.fine_tuned_model), ("base", "tiny-demo")):
            reply = client.chat.completions.create(
                model=model or "",
                messages=[
                    {"role": "system", "content": "Answer briefly."},
                    {"role": "user", "content": question},
                ],
                temperature=0,
                max_tokens=16,
            )
            print(f"  {label:>10}: {reply.choices[0].message.content!r}")
        print(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
