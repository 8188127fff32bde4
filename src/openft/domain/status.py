"""The job status machine: which status may follow which, and what each operation needs."""

from __future__ import annotations

from openft.domain.entities import JobStatus
from openft.domain.errors import InvalidTransition

S = JobStatus

TERMINAL: frozenset[JobStatus] = frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED})
ACTIVE: frozenset[JobStatus] = frozenset(set(JobStatus) - TERMINAL)

_NEXT: dict[JobStatus, frozenset[JobStatus]] = {
    S.VALIDATING_FILES: frozenset({S.QUEUED, S.FAILED, S.CANCELLED}),
    S.QUEUED: frozenset({S.RUNNING, S.PAUSED, S.FAILED, S.CANCELLED}),
    # running -> queued is the recovery of a job whose worker went silent.
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED, S.PAUSED, S.QUEUED}),
    S.PAUSED: frozenset({S.QUEUED, S.CANCELLED, S.FAILED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}


def can_move(current: JobStatus, target: JobStatus) -> bool:
    return target in _NEXT[current]


def refusal(job_id: str, current: JobStatus, action: str) -> InvalidTransition:
    return InvalidTransition(
        f"Cannot {action} fine-tuning job {job_id}: its status is {current.value}.",
        param="fine_tuning_job_id",
    )


def ensure_move(job_id: str, current: JobStatus, target: JobStatus, action: str) -> None:
    """Raise a clear error unless a job in `current` may go to `target`."""
    if not can_move(current, target):
        raise refusal(job_id, current, action)
