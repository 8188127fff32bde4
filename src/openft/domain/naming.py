"""Names of fine-tuned models and their checkpoints, in OpenAI's shapes."""

from __future__ import annotations


def fine_tuned_model(base: str, project: str, suffix: str | None, job_id: str) -> str:
    """`ft:{base}:{project}:{suffix}:{job id}` (the suffix part is empty without one)."""
    return f"ft:{base}:{project}:{suffix or ''}:{job_id}"


def checkpoint_model(fine_tuned: str, step: int) -> str:
    return f"{fine_tuned}:ckpt-step-{step}"
