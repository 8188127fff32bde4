"""The texts of lifecycle events, worded as OpenAI's service words them. One place for each."""

from __future__ import annotations

from openft.domain.entities import EventDraft, EventLevel, EventType, JobError


def created(job_id: str) -> EventDraft:
    return EventDraft(f"Created fine-tuning job: {job_id}")


def validating(training_file: str, validation_file: str | None) -> EventDraft:
    text = f"Validating training file: {training_file}"
    if validation_file:
        text += f" and validation file: {validation_file}"
    return EventDraft(text)


def validated() -> EventDraft:
    return EventDraft("Files validated, moving job to queued state")


def cancelled() -> EventDraft:
    return EventDraft("Fine-tuning job cancelled")


def cancel_requested() -> EventDraft:
    return EventDraft("Cancellation requested; the job stops at its next step")


def paused() -> EventDraft:
    return EventDraft("Fine-tuning job paused")


def pause_requested() -> EventDraft:
    return EventDraft("Pause requested; the job pauses at its next checkpoint")


def resumed() -> EventDraft:
    return EventDraft("Fine-tuning job resumed, moving job to queued state")


def failed(error: JobError) -> EventDraft:
    return EventDraft(error.message, level=EventLevel.ERROR, data={"code": error.code})


def started(worker_id: str) -> EventDraft:
    return EventDraft("Fine-tuning job started", data={"worker_id": worker_id, "attempt": 1})


def resumed_from(step: int, attempt: int, worker_id: str) -> EventDraft:
    where = f"from the checkpoint at step {step}" if step else "from the start"
    return EventDraft(
        f"Fine-tuning job resumed {where} (attempt {attempt})",
        data={"worker_id": worker_id, "attempt": attempt, "step": step},
    )


def worker_key_revoked(key_id: str) -> EventDraft:
    return EventDraft(
        f"The key of the worker running this job ({key_id}) was revoked; the job goes back "
        "to the queue",
        level=EventLevel.WARN,
    )


def worker_lost(attempt: int, max_attempts: int) -> EventDraft:
    return EventDraft(
        f"The worker running this job stopped responding; the job goes back to the queue "
        f"(attempt {attempt} of {max_attempts} done)",
        level=EventLevel.WARN,
    )


def checkpoint_created(step: int, name: str) -> EventDraft:
    return EventDraft(f"Checkpoint created at step {step}: {name}", data={"step": step})


def model_created(name: str) -> EventDraft:
    return EventDraft(f"New fine-tuned model created: {name}")


def succeeded() -> EventDraft:
    return EventDraft("The job has successfully completed")


def step_metrics(data: dict[str, object]) -> EventDraft:
    """`Step 12/300: training loss=0.98` (`, validation loss=1.05` with validation data);
    a reinforcement job's steps read as `reward_metrics` says."""
    if "train_mean_reward" in data or "full_valid_mean_reward" in data:
        return reward_metrics(data)
    text = (
        f"Step {data['step']}/{data['total_steps']}: training loss={float(data['train_loss']):.2f}"  # type: ignore[arg-type]
    )
    if data.get("valid_loss") is not None:
        text += f", validation loss={float(data['valid_loss']):.2f}"  # type: ignore[arg-type]
    return EventDraft(text, type=EventType.METRICS, data=dict(data))


def reward_metrics(data: dict[str, object]) -> EventDraft:
    """`Step 12/300, train mean reward=0.41, full validation mean reward=0.39` (the last
    part at evaluation steps only), as OpenAI words a reinforcement job's steps."""
    text = f"Step {data['step']}/{data['total_steps']}"
    for key, label in (
        ("train_mean_reward", "train mean reward"),
        ("full_valid_mean_reward", "full validation mean reward"),
    ):
        if data.get(key) is not None:
            text += f", {label}={float(data[key]):.2f}"  # type: ignore[arg-type]
    return EventDraft(text, type=EventType.METRICS, data=dict(data))
