"""The texts of lifecycle events, worded as OpenAI's service words them. One place for each."""

from __future__ import annotations

from openft.domain.entities import EventDraft, EventLevel, JobError


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
