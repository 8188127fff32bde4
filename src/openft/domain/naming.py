"""Names of fine-tuned models and their checkpoints, in OpenAI's shapes."""

from __future__ import annotations

import re

_CHECKPOINT = re.compile(r"^(ft:.+):ckpt-step-([0-9]+)$")


def fine_tuned_model(base: str, project: str, suffix: str | None, job_id: str) -> str:
    """`ft:{base}:{project}:{suffix}:{job id}` (the suffix part is empty without one)."""
    return f"ft:{base}:{project}:{suffix or ''}:{job_id}"


def checkpoint_model(fine_tuned: str, step: int) -> str:
    return f"{fine_tuned}:ckpt-step-{step}"


def split_checkpoint_model(name: str) -> tuple[str, int] | None:
    """`(fine-tuned model, step)` of a checkpoint's model name; None for any other name."""
    match = _CHECKPOINT.match(name)
    return (match.group(1), int(match.group(2))) if match else None
