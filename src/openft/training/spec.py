"""What a worker hands the trainer subprocess: one JSON file, read by `openft.training.run`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from openft.domain.entities import Hyperparameters, MethodType
from openft.domain.hyperparameters import BASE_LEARNING_RATE


@dataclass(frozen=True, slots=True)
class TrainingSpec:
    job_id: str
    method: MethodType
    model_source: str  # a Hugging Face id or a local directory
    training_file: str  # local paths
    validation_file: str | None
    hyperparameters: Hyperparameters  # resolved: numbers, no "auto"
    seed: int
    output_dir: str
    control_file: str
    resume_from: str | None = None  # a checkpoint directory of a previous attempt
    metrics_every: int = 1
    checkpoint_every: int = 0  # steps; 0: at the end of each epoch
    learning_rate: float = BASE_LEARNING_RATE  # times the multiplier
    # How many processes train the job together (one group, `batch_size` the global
    # batch), and how they share the model: "ddp" (a copy each), "fsdp" or "deepspeed"
    # (ZeRO-3: sharded, for base models that do not fit one device).
    processes: int = 1
    distributed: str = "ddp"
    # A job on a fine-tuned model or checkpoint goes on training its LoRA adapter (a local
    # directory of peft's files) instead of a new one.
    start_adapter: str | None = None
    # Reinforcement: the grader as the job's method holds it, and the JSON schema that
    # completions follow (they are parsed into `sample.output_json` for it).
    grader: dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, path: Path) -> TrainingSpec:
        fields = json.loads(path.read_text())
        spec = cls(**fields)
        return replace(
            spec,
            method=MethodType(fields["method"]),
            hyperparameters=Hyperparameters(**fields["hyperparameters"]),
        )
