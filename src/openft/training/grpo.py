"""Reinforcement fine-tuning: TRL's GRPO trainer on LoRA, rewarded by the job's grader.

`run.py` hands a `reinforcement` job here. The rest is the other methods' machinery:
the same loaders, the same callback (control requests at each step, reports through
`Reporter`), the same checkpoints and resume. What differs:

- each row's messages are the prompt; the row's other fields are the grader's `item`;
- GRPO samples `num_generations` completions per prompt and `Rewards` grades each
  batch of them at once with `openft.graders.grade_batch`;
- a step's metrics are OpenAI's RFT metrics (`train_mean_reward`, per-grader `scores`,
  `errors`, `completion_tokens_mean`; `full_valid_mean_reward` at evaluation steps), and
  checkpoints are saved at evaluation steps, with the validation reward they scored.

How OpenAI's hyperparameters become GRPO's settings: docs/training.md.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openft.domain.hyperparameters import generations
from openft.graders import Grader, ModelCaller, Sample, grade_batch
from openft.graders import parse as parse_grader
from openft.training import distributed
from openft.training.data import ITEM_COLUMN, prompt_dataset
from openft.training.distributed import Group
from openft.training.errors import TrainingError
from openft.training.grader_calls import ServerModels
from openft.training.protocol import (
    CheckpointSaved,
    Log,
    Metrics,
    Progress,
    Reporter,
)
from openft.training.run import (
    _callback,
    _dtype,
    _load_model,
    _load_tokenizer,
    _round,
    lora_config,
    per_device_batch,
    run_to_the_end,
)
from openft.training.spec import TrainingSpec

# The longest completion for each reasoning effort (capped by the job's max_length).
COMPLETION_TOKENS = {"low": 256, "default": 512, "medium": 512, "high": 1024}
# How TRL names what the reward function logs (`log_metric`), and openft's event keys.
SCORE_PREFIX = "openft_score/"
ERROR_PREFIX = "openft_error/"


def completion_text(completion: Any) -> str:
    """The text of one completion: TRL passes conversational completions as a list of
    assistant messages, plain ones as a string."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content") or "") for m in completion if isinstance(m, dict))


def _sample(text: str, response_format: dict[str, Any] | None) -> Sample:
    if response_format is None:
        return Sample(output_text=text)
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        parsed = None  # a template reading sample.output_json then scores 0, as it should
    return Sample(output_text=text, output_json=parsed)


class Rewards:
    """GRPO's reward function: one grade per completion, a batch at a time. Logs the
    per-grader score means and the error flags' means through TRL's `log_metric`, which
    averages them per logging step and per mode (training or evaluation)."""

    __name__ = "grader"  # TRL names a reward function's metrics after it

    def __init__(
        self,
        grader: Grader,
        response_format: dict[str, Any] | None,
        models: ModelCaller | None = None,
    ) -> None:
        self.grader = grader
        self.response_format = response_format
        # Where model graders' calls go (the worker's server), if the grader has any.
        self.models = models

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> list[float | None]:
        items = [json.loads(raw) for raw in columns[ITEM_COLUMN]]
        samples = [_sample(completion_text(c), self.response_format) for c in completions]
        results = grade_batch(self.grader, samples, items, self.models)
        log_metric = columns.get("log_metric")
        if log_metric is not None and results:
            scores: dict[str, list[float]] = defaultdict(list)
            errors: dict[str, list[float]] = defaultdict(list)
            for result in results:
                for name, score in (result.scores or {result.name: result.reward}).items():
                    scores[name].append(float(score))
                for flag, raised in result.errors.items():
                    errors[flag].append(float(raised))
            for name, values in scores.items():
                log_metric(SCORE_PREFIX + name, sum(values) / len(values))
            for flag, values in errors.items():
                log_metric(ERROR_PREFIX + flag, sum(values) / len(values))
        return [float(result.reward) for result in results]


def _prefixed(logs: dict[str, Any], prefix: str) -> dict[str, float]:
    return {k.removeprefix(prefix): _round(v) for k, v in logs.items() if k.startswith(prefix)}


def step_data(logs: dict[str, Any], step: int, total: int) -> dict[str, Any]:
    """A training step's metrics event data, in OpenAI's RFT shape, from TRL's log."""
    data: dict[str, Any] = {
        "step": step,
        "total_steps": total,
        "train_mean_reward": logs.get("reward"),
        "train_reward_std": logs.get("reward_std"),
        "completion_tokens_mean": logs.get("completions/mean_length"),
        "scores": _prefixed(logs, SCORE_PREFIX),
        "errors": _prefixed(logs, ERROR_PREFIX),
        "train_loss": logs.get("loss"),
        "learning_rate": logs.get("learning_rate"),
        "grad_norm": logs.get("grad_norm"),
        "epoch": logs.get("epoch"),
    }
    return {k: _round(v) for k, v in data.items() if v is not None}


def _reporting(spec: TrainingSpec, reporter: Reporter, group: Group) -> Any:
    """The other methods' callback (control requests, every rank at the same step), its
    logging and checkpoint reports replaced by RFT's."""
    base = type(_callback(spec, reporter, 0, group))

    class RewardReporting(base):  # type: ignore[valid-type,misc]
        def __init__(self) -> None:
            super().__init__()
            self.pending: dict[str, Any] | None = None  # a step's data awaiting its eval
            # The latest evaluation's step and mean reward.
            self.valid: tuple[int, float] | None = None
            self.tokens = (time.monotonic(), 0.0)

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            logs = logs or {}
            step, total = state.global_step, state.max_steps
            if "eval_reward" in logs:
                self.valid = (step, float(logs["eval_reward"]))
                data = self.pending or {"step": step, "total_steps": total}
                data["full_valid_mean_reward"] = _round(self.valid[1])
                data["full_valid_scores"] = _prefixed(logs, "eval_" + SCORE_PREFIX)
                self.pending = None
                reporter.send(Metrics(data=data))
                return
            if "reward" not in logs:
                return  # the end-of-training summary
            data = step_data(logs, step, total)
            now, seen = time.monotonic(), float(logs.get("num_tokens", 0.0))
            data["tokens_per_second"] = _round(
                (seen - self.tokens[1]) / max(1e-9, now - self.tokens[0])
            )
            self.tokens = (now, seen)
            if control.should_evaluate:
                self.pending = data  # sent with the validation reward, right after
            else:
                reporter.send(Metrics(data=data))
            elapsed = now - self._started
            remaining = elapsed / max(1, step) * (total - step)
            reporter.send(
                Progress(trained_tokens=int(seen), estimated_finish=int(time.time() + remaining))
            )

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            distributed.barrier(group)
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            metrics: dict[str, float] = {"step": state.global_step}
            train = next((h for h in reversed(state.log_history) if "reward" in h), None)
            if train is not None:
                metrics["train_mean_reward"] = _round(float(train["reward"]))
            # Only an evaluation of this very step: a checkpoint saved for a pause between
            # evaluations has no validation reward (and ranks last among those kept).
            if self.valid is not None and self.valid[0] == state.global_step:
                metrics["full_valid_mean_reward"] = _round(self.valid[1])
            reporter.send(CheckpointSaved(step=state.global_step, path=str(path), metrics=metrics))

    return RewardReporting()


def grpo_arguments(
    spec: TrainingSpec, group: Group, examples: int, validation: bool
) -> dict[str, Any]:
    """GRPOConfig's arguments for the job's resolved hyperparameters (docs/training.md)."""
    import torch

    hyper = spec.hyperparameters
    batch_size = int(hyper.batch_size)
    if batch_size > examples:
        raise TrainingError(
            "invalid_batch_size",
            f"batch_size {batch_size} is larger than the {examples} training examples. "
            "Create the job again with a smaller batch_size, or with 'auto'.",
            "hyperparameters.batch_size",
        )
    prompts = per_device_batch(batch_size, group)  # prompts per device per step
    assert hyper.compute_multiplier is not None and hyper.compute_multiplier != "auto"
    assert isinstance(hyper.eval_interval, int) and isinstance(hyper.eval_samples, int)
    group_size = generations(float(hyper.compute_multiplier))
    return dict(
        output_dir=spec.output_dir,
        num_train_epochs=int(hyper.n_epochs),
        # GRPO's batches count completions: each prompt's group of them in one batch.
        per_device_train_batch_size=prompts * group_size,
        num_generations=group_size,
        per_device_eval_batch_size=prompts * hyper.eval_samples,
        num_generations_eval=hyper.eval_samples,
        max_completion_length=min(
            COMPLETION_TOKENS[str(hyper.reasoning_effort or "default")], hyper.max_length
        ),
        learning_rate=spec.learning_rate * float(hyper.learning_rate_multiplier),
        logging_steps=spec.metrics_every,
        eval_strategy="steps" if validation else "no",
        eval_steps=hyper.eval_interval,
        save_strategy="steps",
        save_steps=hyper.eval_interval,
        report_to=[],
        seed=spec.seed,
        data_seed=spec.seed,
        disable_tqdm=True,
        bf16=_dtype() == torch.bfloat16,
        **distributed.strategy_arguments(spec.distributed, group),
    )


def train_grpo(spec: TrainingSpec, reporter: Reporter, group: Group) -> None:
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer  # type: ignore[attr-defined]

    if spec.grader is None:
        raise TrainingError("invalid_method", "A reinforcement job needs a grader.", "method")
    grader = parse_grader(spec.grader, param="method.reinforcement.grader")
    torch.manual_seed(spec.seed)
    reporter.send(Log(message=f"Loading base model {spec.model_source}"))
    tokenizer = _load_tokenizer(spec)
    train_rows = prompt_dataset(Path(spec.training_file), "training file")
    valid_rows = (
        prompt_dataset(Path(spec.validation_file), "validation file")
        if spec.validation_file
        else None
    )
    args = GRPOConfig(**grpo_arguments(spec, group, len(train_rows), bool(valid_rows)))
    model = _load_model(spec)
    if spec.start_adapter is not None:  # a job on a fine-tuned model: its adapter goes on
        reporter.send(Log(message="Continuing to train the fine-tuned model's LoRA adapter"))
    callback = _reporting(spec, reporter, group)
    trainer: Any = GRPOTrainer(
        model=model,
        reward_funcs=[Rewards(grader, spec.response_format, ServerModels.from_environment())],
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(valid_rows) if valid_rows else None,
        processing_class=tokenizer,
        peft_config=lora_config(spec),
        callbacks=[callback],
    )
    run_to_the_end(
        spec,
        reporter,
        group,
        trainer,
        callback,
        lambda: int(trainer.state.num_input_tokens_seen),
    )
