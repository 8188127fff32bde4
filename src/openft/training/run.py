"""The trainer subprocess: `python -m openft.training.run SPEC.json`.

Loads the base model (a Hugging Face id or a local directory), fine-tunes a LoRA adapter
with TRL (SFT for `supervised`, DPO for `dpo`), and reports metrics, checkpoints and the
outcome to its worker through `protocol.Reporter`. Between steps it reads the control
file the worker writes: "cancel" stops at once, "pause" saves a checkpoint and stops.
"""

from __future__ import annotations

import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from openft.domain.chat_template import CHAT_TEMPLATE
from openft.domain.entities import Control, MethodType
from openft.domain.errors import InvalidFile
from openft.training.data import chat_dataset, preference_dataset
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


class TrainingError(Exception):
    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


def _round(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value


def _load(spec: TrainingSpec) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = Path(spec.model_source).is_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec.model_source, local_files_only=local)
        dtype = (
            torch.bfloat16
            if torch.cuda.is_available() and torch.cuda.is_bf16_supported()
            else torch.float32
        )
        model = AutoModelForCausalLM.from_pretrained(
            spec.model_source, local_files_only=local, dtype=dtype
        )
    except Exception as exc:
        raise TrainingError(
            "model_load_failed",
            f"Could not load the base model from {spec.model_source!r}: {exc}. Check the "
            "server's --model NAME=SOURCE setting and that the worker can read it.",
        ) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return model, tokenizer


def _token_accuracy(logits: Any, labels: Any) -> tuple[int, int]:
    predicted = logits[:, :-1].argmax(dim=-1)
    target = labels[:, 1:]
    mask = target != -100
    return int(((predicted == target) & mask).sum()), int(mask.sum())


def _evaluate(model: Any, batches: Any) -> dict[str, float]:
    """Mean loss and token accuracy of `model` over `batches` (SFT batches with labels)."""
    import torch

    was_training = model.training
    model.eval()
    losses, correct, counted = [], 0, 0
    with torch.no_grad():
        for batch in batches:
            batch = {k: v.to(model.device) for k, v in batch.items() if hasattr(v, "to")}
            output = model(**batch)
            losses.append(float(output.loss))
            right, total = _token_accuracy(output.logits, batch["labels"])
            correct, counted = correct + right, counted + total
    if was_training:
        model.train()
    return {
        "loss": sum(losses) / max(1, len(losses)),
        "accuracy": correct / counted if counted else 0.0,
    }


def _callback(spec: TrainingSpec, reporter: Reporter, tokens_per_epoch: int) -> Any:
    from transformers import TrainerCallback

    control_file = Path(spec.control_file)

    class Reporting(TrainerCallback):
        """Reports metrics and checkpoints; obeys the worker's control file."""

        def __init__(self) -> None:
            self.trainer: Any = None
            self.stopped: Control | None = None
            self._valid: Any = None
            self._started = time.monotonic()
            self._last = (time.monotonic(), 0.0)

        def _valid_batch(self) -> list[Any]:
            if self.trainer.eval_dataset is None or spec.method is not MethodType.SUPERVISED:
                return []
            if self._valid is None:
                self._valid = iter(self.trainer.get_eval_dataloader())
            try:
                return [next(self._valid)]
            except StopIteration:
                self._valid = iter(self.trainer.get_eval_dataloader())
                return [next(self._valid)]

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            request = control_file.read_text().strip() if control_file.exists() else ""
            if request in set(Control) and self.stopped is None:
                self.stopped = Control(request)
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
            batch = self._valid_batch()
            if batch and model is not None:
                valid = _evaluate(model, batch)
                data["valid_loss"], data["valid_mean_token_accuracy"] = (
                    valid["loss"],
                    valid["accuracy"],
                )
            if step >= total and self.trainer.eval_dataset is not None and model is not None:
                if spec.method is MethodType.SUPERVISED:
                    full = _evaluate(model, self.trainer.get_eval_dataloader())
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


def train(spec: TrainingSpec, reporter: Reporter) -> None:
    import torch
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer  # type: ignore[attr-defined]

    hyper = spec.hyperparameters
    torch.manual_seed(spec.seed)
    reporter.send(Log(message=f"Loading base model {spec.model_source}"))
    model, tokenizer = _load(spec)
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
    from datasets import Dataset

    train_set = Dataset.from_list(train_rows)
    valid_set = Dataset.from_list(valid_rows) if valid_rows else None
    steps_per_epoch = math.ceil(len(train_rows) / batch_size)
    common: dict[str, Any] = dict(
        output_dir=spec.output_dir,
        num_train_epochs=int(hyper.n_epochs),
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        learning_rate=spec.learning_rate * float(hyper.learning_rate_multiplier),
        logging_steps=spec.metrics_every,
        save_strategy="steps" if spec.checkpoint_every else "epoch",
        save_steps=spec.checkpoint_every or steps_per_epoch,
        report_to=[],
        seed=spec.seed,
        data_seed=spec.seed,
        disable_tqdm=True,
        max_length=max_length,
        bf16=next(model.parameters()).dtype == torch.bfloat16,
    )
    lora = LoraConfig(
        r=hyper.lora_rank,
        lora_alpha=hyper.lora_alpha,
        lora_dropout=hyper.lora_dropout,
        target_modules=_targets(hyper.lora_target_modules),
        task_type="CAUSAL_LM",
    )
    callback = _callback(spec, reporter, tokens_per_epoch)
    trainer: Any
    if spec.method is MethodType.DPO:
        assert isinstance(hyper.beta, int | float), "a DPO job's beta is resolved on claim"
        trainer = DPOTrainer(
            model=model,
            args=DPOConfig(beta=float(hyper.beta), **common),
            train_dataset=train_set,
            eval_dataset=valid_set,
            processing_class=tokenizer,
            peft_config=lora,
            callbacks=[callback],
        )
    else:
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(**common),
            train_dataset=train_set,
            eval_dataset=valid_set,
            processing_class=tokenizer,
            peft_config=lora,
            callbacks=[callback],
        )
    callback.trainer = trainer
    reporter.send(Log(message=f"Training on {trainer.args.device}"))
    trainer.train(resume_from_checkpoint=spec.resume_from)
    if callback.stopped:
        reporter.send(Stopped(reason=callback.stopped))
        return
    adapter = Path(spec.output_dir) / "adapter"
    trainer.model.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    epochs = int(hyper.n_epochs)
    reporter.send(Done(trained_tokens=tokens_per_epoch * epochs, adapter=str(adapter)))


def _targets(value: str) -> str | list[str]:
    return (
        value
        if value == "all-linear"
        else [part.strip() for part in value.split(",") if part.strip()]
    )


def main(argv: list[str]) -> int:
    reporter = Reporter.from_environment()
    spec = TrainingSpec.read(Path(argv[1]))
    try:
        train(spec, reporter)
        return 0
    except TrainingError as exc:
        reporter.send(Failed(code=exc.code, message=exc.message, param=exc.param))
    except InvalidFile as exc:
        reporter.send(
            Failed(code="invalid_training_file", message=exc.message, param="training_file")
        )
    except Exception as exc:
        traceback.print_exc()
        import torch

        if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
            reporter.send(
                Failed(
                    code="out_of_memory",
                    message=f"Training ran out of memory: {exc}. Create the job again with a "
                    "smaller batch_size (or max_length).",
                    param="hyperparameters.batch_size",
                )
            )
        else:
            reporter.send(
                Failed(
                    code="training_error", message=f"Training failed: {type(exc).__name__}: {exc}"
                )
            )
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
