"""Names of fine-tuned models and their checkpoints, in OpenAI's shapes."""

from __future__ import annotations

import re

from openft.domain.ids import JOB_PREFIX

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


def job_of_model(name: str) -> str | None:
    """The id of the job that made a fine-tuned model or checkpoint (its name's last part:
    job ids hold no colon, whatever the base, project and suffix do); None for any other name."""
    checkpoint_of = split_checkpoint_model(name)
    model = checkpoint_of[0] if checkpoint_of else name
    if not model.startswith("ft:"):
        return None
    job_id = model.rsplit(":", 1)[-1]
    return job_id if job_id.startswith(JOB_PREFIX) else None
