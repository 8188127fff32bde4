"""The documented rule that turns "auto" hyperparameters into numbers.

Resolved from the number of training examples `n`, in the spirit of OpenAI's own:
- n_epochs: 3, raised so the run sees at least 100 examples in all (at most 25 epochs),
  lowered so it sees at most 25,000 (at least 1 epoch);
- batch_size: the largest power of two not above n / 64, between 1 and 32;
- learning_rate_multiplier: 1.0 (the learning rate is BASE_LEARNING_RATE times it);
- beta (DPO): 0.1;
- reinforcement: compute_multiplier 1.0 (BASE_GENERATIONS completions per prompt);
  eval_interval: the steps of one epoch (n / batch_size, rounded up), so the model is
  evaluated (and checkpointed) once an epoch; eval_samples: 1 completion per validation
  prompt. docs/training.md says how each becomes a GRPO setting.
"""

from __future__ import annotations

import math
from dataclasses import replace

from openft.domain.entities import Hyperparameters, MethodType

BASE_LEARNING_RATE = 2e-4  # a common LoRA learning rate; multiplied by the multiplier
BASE_GENERATIONS = 4  # completions per prompt at compute_multiplier 1 (GRPO needs 2 or more)
MIN_EXAMPLES_SEEN = 100
MAX_EXAMPLES_SEEN = 25_000
MAX_EPOCHS = 25


def auto_epochs(n: int) -> int:
    epochs = 3
    if n * epochs < MIN_EXAMPLES_SEEN:
        epochs = min(MAX_EPOCHS, math.ceil(MIN_EXAMPLES_SEEN / n))
    elif n * epochs > MAX_EXAMPLES_SEEN:
        epochs = max(1, MAX_EXAMPLES_SEEN // n)
    return epochs


def auto_batch_size(n: int) -> int:
    return max(1, min(32, 2 ** int(math.log2(max(1, n // 64))))) if n >= 64 else 1


def generations(compute_multiplier: float) -> int:
    """GRPO's completions per prompt for a resolved compute_multiplier: at least 2, as a
    group of one has no advantage to learn from."""
    return max(2, round(BASE_GENERATIONS * compute_multiplier))


def _resolve_reinforcement(hyper: Hyperparameters, examples: int) -> Hyperparameters:
    assert isinstance(hyper.batch_size, int), "batch_size is resolved first"
    steps_per_epoch = math.ceil(examples / hyper.batch_size)
    return replace(
        hyper,
        compute_multiplier=1.0 if hyper.compute_multiplier == "auto" else hyper.compute_multiplier,
        eval_interval=steps_per_epoch if hyper.eval_interval == "auto" else hyper.eval_interval,
        eval_samples=1 if hyper.eval_samples == "auto" else hyper.eval_samples,
    )


def resolve(hyper: Hyperparameters, method: MethodType, examples: int) -> Hyperparameters:
    """`hyper` with every "auto" replaced by the rule's value for `examples` examples."""
    resolved = _resolve_common(hyper, method, examples)
    if method is MethodType.REINFORCEMENT:
        return _resolve_reinforcement(resolved, examples)
    return resolved


def _resolve_common(hyper: Hyperparameters, method: MethodType, examples: int) -> Hyperparameters:
    return replace(
        hyper,
        n_epochs=auto_epochs(examples) if hyper.n_epochs == "auto" else hyper.n_epochs,
        batch_size=auto_batch_size(examples) if hyper.batch_size == "auto" else hyper.batch_size,
        learning_rate_multiplier=(
            1.0 if hyper.learning_rate_multiplier == "auto" else hyper.learning_rate_multiplier
        ),
        beta=(0.1 if hyper.beta == "auto" else hyper.beta) if method is MethodType.DPO else None,
    )
