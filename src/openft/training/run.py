"""The trainer process: `python -m openft.training.run SPEC.json`.

Loads the base model (a Hugging Face id or a local directory), fine-tunes a LoRA adapter
with TRL (SFT for `supervised`, DPO for `dpo`, GRPO for `reinforcement`: see `grpo`), and
reports metrics, checkpoints and the outcome to its worker through `protocol.Reporter`.
Between steps it reads the control file the worker writes: "cancel" stops at once, "pause"
saves a checkpoint and stops.

A job on several processes (`spec.processes`, started by torchrun: docs/workers.md) runs
this module once per rank; `distributed` says what the ranks share and how. `batch_size`
stays the global batch, so a job's steps, curves and checkpoints have the same shape
whatever the number of processes.
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openft.domain.entities import Control, MethodType
from openft.domain.errors import InvalidFile
from openft.models import loading
from openft.training import distributed
from openft.training.data import chat_dataset, preference_dataset
from openft.training.distributed import Group
from openft.training.errors import TrainingError
from openft.training.protocol import (
    CheckpointSaved,
    Done,
    Failed,
    Log,
    Metrics,
    Progress,
    Reporter,
    Stopped,
)
from openft.training.spec import TrainingSpec

__all__ = ["TrainingError", "main", "train"]

# The control requests as numbers, so that ranks agree on one by taking the largest:
# a cancel outranks a pause.
_REQUESTS = {Control.PAUSE: 1, Control.CANCEL: 2}


def _round(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value


# grpo.py's name for the weights' dtype, imported from here.
_dtype = loading.dtype


def _load_failed(spec: TrainingSpec, exc: Exception) -> TrainingError:
    return TrainingError(
        "model_load_failed",
        f"Could not load the base model from {spec.model_source!r}: {exc}. Check the "
        "server's --model NAME=SOURCE setting and that the worker can read it.",
    )


def _load_tokenizer(spec: TrainingSpec) -> Any:
    try:
        tokenizer = loading.load_tokenizer(spec.model_source)
    except Exception as exc:
        raise _load_failed(spec, exc) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_model(spec: TrainingSpec) -> Any:
    """The base model; for a job on a fine-tuned model or checkpoint, with that model's
    LoRA adapter on it, trainable (the job goes on training it: the new model is again
    the base and one adapter, which is what serving loads)."""
    try:
        model = loading.load_model(spec.model_source)
    except Exception as exc:
        raise _load_failed(spec, exc) from exc
    if spec.start_adapter is None:
        return model
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, spec.start_adapter, is_trainable=True)
    except Exception as exc:
        raise TrainingError(
            "model_load_failed",
            f"Could not load the adapter of the fine-tuned model this job starts from: {exc}.",
            "model",
        ) from exc


def lora_config(spec: TrainingSpec) -> Any:
    """A new LoRA adapter's configuration from the job's hyperparameters; None for a job
    that goes on training a fine-tuned model's adapter (which keeps its own shape)."""
    from peft import LoraConfig

    if spec.start_adapter is not None:
        return None
    hyper = spec.hyperparameters
    return LoraConfig(
        r=hyper.lora_rank,
        lora_alpha=hyper.lora_alpha,
        lora_dropout=hyper.lora_dropout,
        target_modules=_targets(hyper.lora_target_modules),
        task_type="CAUSAL_LM",
    )


def _token_counts(logits: Any, labels: Any) -> tuple[int, int]:
    """(correctly predicted, counted) label tokens of a batch."""
    predicted = logits[:, :-1].argmax(dim=-1)
    target = labels[:, 1:]
    mask = target != -100
    return int(((predicted == target) & mask).sum()), int(mask.sum())


class Validation:
    """Loss and token accuracy on validation examples, computed by every rank together.

    Examples go in global batches of `batch_size` (as a training step takes them), each
    split evenly over the ranks; every rank runs the same number of forward passes (a
    sharded model's forward is a collective), and the sums are added over the ranks.
    The loss is the mean over label tokens, so the figures do not depend on how many
    processes computed them."""

    def __init__(self, rows: list[dict[str, Any]], batch_size: int, group: Group) -> None:
        self.rows, self.batch_size, self.group = rows, batch_size, group
        self.batches = math.ceil(len(rows) / batch_size)
        self._next = 0

    def _batch(self, index: int) -> list[dict[str, Any]]:
        return self.rows[index * self.batch_size : (index + 1) * self.batch_size]

    def next_batch(self, model: Any, device: Any, collate: Any) -> dict[str, float]:
        """The next global batch (cycling through the examples), for a step's metrics."""
        index, self._next = self._next, (self._next + 1) % self.batches
        return self.evaluate(model, device, collate, [index])

    def full(self, model: Any, device: Any, collate: Any) -> dict[str, float]:
        return self.evaluate(model, device, collate, list(range(self.batches)))

    def evaluate(
        self, model: Any, device: Any, collate: Any, indexes: list[int]
    ) -> dict[str, float]:
        """`collate` turns examples into a batch: the trainer's data collator."""
        import torch

        share = self.batch_size // self.group.size
        was_training = model.training
        model.eval()
        loss_sum = correct = counted = 0.0
        with torch.no_grad():
            for index in indexes:
                batch = self._batch(index)
                mine = batch[self.group.rank * share : (self.group.rank + 1) * share]
                # A rank with nothing left in a short last batch still takes part.
                inputs = collate(mine or batch[:1])
                inputs = {k: v.to(device) for k, v in inputs.items() if hasattr(v, "to")}
                output = model(**inputs)
                if not mine:
                    continue
                right, total = _token_counts(output.logits, inputs["labels"])
                loss_sum += float(output.loss) * total
                correct, counted = correct + right, counted + total
        if was_training:
            model.train()
        loss_sum, correct, counted = distributed.total(self.group, [loss_sum, correct, counted])
        return {
            "loss": loss_sum / counted if counted else 0.0,
            "accuracy": correct / counted if counted else 0.0,
        }


def _callback(
    spec: TrainingSpec,
    reporter: Reporter,
    tokens_per_epoch: int,
    group: Group | None = None,
    validation: Validation | None = None,
) -> Any:
    from transformers import TrainerCallback

    control_file = Path(spec.control_file)
    ranks = group or Group(0, 1, 0, "cpu", None)

    class Reporting(TrainerCallback):
        """Reports metrics and checkpoints (rank 0: the other ranks' reporter is silent);
        obeys the worker's control file, every rank at the same step."""

        def __init__(self) -> None:
            self.trainer: Any = None
            self.stopped: Control | None = None
            self._started = time.monotonic()
            self._last = (time.monotonic(), 0.0)

        def _request(self) -> int:
            text = control_file.read_text().strip() if control_file.exists() else ""
            return _REQUESTS.get(Control(text), 0) if text in set(Control) else 0

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            # Every rank reads the file, and all take the strongest request any of them
            # saw: one rank stopping a step before another would leave it waiting in a
            # collective for ever.
            agreed = distributed.agree(ranks, self._request())
            if agreed and self.stopped is None:
                self.stopped = next(c for c, n in _REQUESTS.items() if n == agreed)
                control.should_training_stop = True
                control.should_save = self.stopped is Control.PAUSE
            return control

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            logs = logs or {}
            if "loss" not in logs or self.trainer is None:
                return  # the end-of-training summary, or an evaluation's own log
            step, total = state.global_step, state.max_steps
            now = time.monotonic()
            tokens = tokens_per_epoch * float(logs.get("epoch", 0.0))
            rate = (tokens - self._last[1]) / max(1e-9, now - self._last[0])
            self._last = (now, tokens)
            # transformers and TRL have already averaged these over the ranks.
            data: dict[str, Any] = {
                "step": step,
                "total_steps": total,
                "train_loss": logs["loss"],
                "learning_rate": logs.get("learning_rate"),
                "grad_norm": logs.get("grad_norm"),
                "epoch": logs.get("epoch"),
                "tokens_per_second": rate,
            }
            if "mean_token_accuracy" in logs:
                data["train_mean_token_accuracy"] = logs["mean_token_accuracy"]
            for source, name in (
                ("rewards/accuracies", "train_reward_accuracy"),
                ("rewards/margins", "train_reward_margin"),
            ):
                if source in logs:
                    data[name] = logs[source]
            model = kwargs.get("model")
            collate = self.trainer.data_collator
            if validation is not None and model is not None:
                valid = validation.next_batch(model, args.device, collate)
                data["valid_loss"], data["valid_mean_token_accuracy"] = (
                    valid["loss"],
                    valid["accuracy"],
                )
                if step >= total:
                    full = validation.full(model, args.device, collate)
                    data["full_valid_loss"], data["full_valid_mean_token_accuracy"] = (
                        full["loss"],
                        full["accuracy"],
                    )
            reporter.send(Metrics(data={k: _round(v) for k, v in data.items() if v is not None}))
            elapsed = now - self._started
            remaining = elapsed / max(1, step) * (total - step)
            reporter.send(
                Progress(trained_tokens=int(tokens), estimated_finish=int(time.time() + remaining))
            )

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            # Every rank has written its part (its RNG state, its shard) before rank 0
            # hands the directory to the worker, which packs it at once.
            distributed.barrier(ranks)
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            last = state.log_history[-1] if state.log_history else {}
            metrics = {"step": state.global_step}
            if "loss" in last:
                metrics["train_loss"] = last["loss"]
            if "mean_token_accuracy" in last:
                metrics["train_mean_token_accuracy"] = last["mean_token_accuracy"]
            reporter.send(
                CheckpointSaved(
                    step=state.global_step,
                    path=str(path),
                    metrics={k: _round(v) for k, v in metrics.items()},
                )
            )

    return Reporting()


def per_device_batch(batch_size: int, group: Group) -> int:
    """Each process's share of the global batch; a TrainingError if it does not divide."""
    if batch_size % group.size:
        raise TrainingError(
            "invalid_batch_size",
            f"batch_size {batch_size} cannot be shared evenly by the {group.size} processes "
            f"this worker trains on (batch_size is the global batch). Create the job again "
            f"with a batch_size that is a multiple of {group.size}.",
            "hyperparameters.batch_size",
        )
    return batch_size // group.size


def train(spec: TrainingSpec, reporter: Reporter) -> None:
    group = distributed.join(spec.processes)
    _train(spec, reporter, group)
    distributed.leave(group)


def _train(spec: TrainingSpec, reporter: Reporter, group: Group) -> None:
    if spec.method is MethodType.REINFORCEMENT:
        from openft.training.grpo import train_grpo

        return train_grpo(spec, reporter, group)
    import torch
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer  # type: ignore[attr-defined]

    hyper = spec.hyperparameters
    torch.manual_seed(spec.seed)
    reporter.send(Log(message=f"Loading base model {spec.model_source}"))
    tokenizer = _load_tokenizer(spec)
    max_length = hyper.max_length
    if spec.method is MethodType.DPO:
        train_rows = preference_dataset(Path(spec.training_file), "training file")
        valid_rows = (
            preference_dataset(Path(spec.validation_file), "validation file")
            if spec.validation_file
            else None
        )
        tokens_per_epoch = sum(
            len(
                tokenizer.apply_chat_template(r["prompt"] + r["chosen"], tokenize=True)["input_ids"]
            )
            for r in train_rows
        )
    else:
        train_rows = chat_dataset(tokenizer, Path(spec.training_file), "training file", max_length)
        valid_rows = (
            chat_dataset(tokenizer, Path(spec.validation_file), "validation file", max_length)
            if spec.validation_file
            else None
        )
        tokens_per_epoch = sum(len(r["input_ids"]) for r in train_rows)
    batch_size = int(hyper.batch_size)
    if batch_size > len(train_rows):
        raise TrainingError(
            "invalid_batch_size",
            f"batch_size {batch_size} is larger than the {len(train_rows)} training examples. "
            "Create the job again with a smaller batch_size, or with 'auto'.",
            "hyperparameters.batch_size",
        )
    per_device = per_device_batch(batch_size, group)
    from datasets import Dataset

    train_set = Dataset.from_list(train_rows)
    valid_set = Dataset.from_list(valid_rows) if valid_rows else None
    steps_per_epoch = math.ceil(len(train_rows) / batch_size)
    common: dict[str, Any] = dict(
        output_dir=spec.output_dir,
        num_train_epochs=int(hyper.n_epochs),
        per_device_train_batch_size=per_device,
        per_device_eval_batch_size=per_device,
        learning_rate=spec.learning_rate * float(hyper.learning_rate_multiplier),
        logging_steps=spec.metrics_every,
        save_strategy="steps" if spec.checkpoint_every else "epoch",
        save_steps=spec.checkpoint_every or steps_per_epoch,
        report_to=[],
        seed=spec.seed,
        data_seed=spec.seed,
        disable_tqdm=True,
        max_length=max_length,
        bf16=loading.dtype() == torch.bfloat16,
        **distributed.strategy_arguments(spec.distributed, group),
    )
    # The arguments come before the model: under ZeRO-3 they make from_pretrained load
    # it already sharded over the ranks.
    args: Any
    if spec.method is MethodType.DPO:
        assert isinstance(hyper.beta, int | float), "a DPO job's beta is resolved on claim"
        args = DPOConfig(beta=float(hyper.beta), **common)
    else:
        args = SFTConfig(**common)
    model = _load_model(spec)
    if spec.start_adapter is not None:
        reporter.send(Log(message="Continuing to train the fine-tuned model's LoRA adapter"))
    validation = (
        Validation(valid_rows, batch_size, group)
        if valid_rows and spec.method is MethodType.SUPERVISED
        else None
    )
    callback = _callback(spec, reporter, tokens_per_epoch, group, validation)
    trainer: Any = (DPOTrainer if spec.method is MethodType.DPO else SFTTrainer)(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=valid_set,
        processing_class=tokenizer,
        peft_config=lora_config(spec),
        callbacks=[callback],
    )
    epochs = int(hyper.n_epochs)
    run_to_the_end(spec, reporter, group, trainer, callback, lambda: tokens_per_epoch * epochs)


def run_to_the_end(
    spec: TrainingSpec,
    reporter: Reporter,
    group: Group,
    trainer: Any,
    callback: Any,
    trained_tokens: Callable[[], int],
) -> None:
    """Train (on from the attempt's checkpoint, if any), then report how it ended:
    stopped as a control request asked, or done, with the adapter saved."""
    callback.trainer = trainer
    reporter.send(
        Log(
            message=f"Training on {trainer.args.device}"
            if group.size == 1
            else group.describe(spec.distributed)
        )
    )
    trainer.train(resume_from_checkpoint=spec.resume_from)
    if callback.stopped:
        reporter.send(Stopped(reason=callback.stopped))
        return
    adapter = Path(spec.output_dir) / "adapter"
    # Every rank takes part (a sharded adapter is gathered); rank 0 writes it.
    trainer.save_model(str(adapter))
    distributed.barrier(group)
    if group.leader:
        (adapter / "training_args.bin").unlink(missing_ok=True)
    reporter.send(Done(trained_tokens=trained_tokens(), adapter=str(adapter)))


def _targets(value: str) -> str | list[str]:
    return (
        value
        if value == "all-linear"
        else [part.strip() for part in value.split(",") if part.strip()]
    )


def _failure(exc: Exception) -> Failed:
    """What the job reports for an exception that ended its training."""
    if isinstance(exc, TrainingError):
        return Failed(code=exc.code, message=exc.message, param=exc.param)
    if isinstance(exc, InvalidFile):
        return Failed(code="invalid_training_file", message=exc.message, param="training_file")
    import torch

    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return Failed(
            code="out_of_memory",
            message=f"Training ran out of memory: {exc}. Create the job again with a "
            "smaller batch_size (or max_length).",
            param="hyperparameters.batch_size",
        )
    return Failed(code="training_error", message=f"Training failed: {type(exc).__name__}: {exc}")


def main(argv: list[str]) -> int:
    spec = TrainingSpec.read(Path(argv[1]))
    # Started by torchrun (one rank of a group), not by the worker directly.
    launched = "TORCHELASTIC_RUN_ID" in os.environ
    if launched:
        distributed.watch_parent()
    # Of a job's processes, rank 0 alone reports.
    leader = int(os.environ.get("RANK", "0")) == 0
    reporter = Reporter.from_environment() if leader else Reporter.silent()
    try:
        train(spec, reporter)
        return 0
    except Exception as exc:
        if not isinstance(exc, TrainingError | InvalidFile):
            traceback.print_exc()
        failure = _failure(exc)
        if not launched:
            reporter.send(failure)
            return 1
        # In a group the launcher reports: it sees every rank's end and names the one
        # that caused it (a rank whose collective broke because another died is not).
        distributed.leave_cause(failure, exc, distributed.peer_lost(exc))
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
