"""The job status machine: which status may follow which, and what each operation needs.

The table `_NEXT` is the law: every compare-and-set the store writes checks its
`expect` set against it (`lawful`), so no statement can move a job along an edge the
table lacks, whatever a caller asks.
"""

from __future__ import annotations

from collections.abc import Iterable

from openft.domain.entities import Control, JobStatus
from openft.domain.errors import InvalidTransition, JobChanged

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


# The same table read backwards: the statuses a job may leave for each status.
_FROM: dict[JobStatus, frozenset[JobStatus]] = {
    target: frozenset(source for source, nexts in _NEXT.items() if target in nexts)
    for target in JobStatus
}


def can_move(current: JobStatus, target: JobStatus) -> bool:
    return target in _NEXT[current]


def sources(target: JobStatus) -> frozenset[JobStatus]:
    """Every status from which the table lets a job move to `target`."""
    return _FROM[target]


def lawful(expect: Iterable[JobStatus], target: JobStatus) -> frozenset[JobStatus]:
    """`expect`, the statuses a compare-and-set moving a job to `target` compares with,
    once checked against the table. A status from which the table does not lead to
    `target` is a bug in the caller (a user's request is refused before, by
    `ensure_move`): it fails here, before any statement runs."""
    expected = frozenset(expect)
    if not expected or not expected <= sources(target):
        names = ", ".join(sorted(status.value for status in expected)) or "nothing"
        raise ValueError(f"the status table has no move from {names} to {target.value}")
    return expected


def refusal(job_id: str, current: JobStatus, action: str) -> InvalidTransition:
    return InvalidTransition(
        f"Cannot {action} fine-tuning job {job_id}: its status is {current.value}.",
        param="fine_tuning_job_id",
    )


def changed_meanwhile(
    job_id: str, action: str, current: JobStatus, control: Control | None
) -> JobChanged:
    """A request whose compare-and-set lost: the job changed between reading and writing
    (a worker claimed, finished or stopped it), so nothing was done. It names what the
    job is now; acting on that is a retry away (the SDKs retry a 409 by themselves)."""
    now = current.value if control is None else f"{current.value}, with a {control.value} requested"
    return JobChanged(
        f"Cannot {action} fine-tuning job {job_id}: it changed while the request was "
        f"handled, and nothing was done. Its status is now {now}.",
        param="fine_tuning_job_id",
    )


def ensure_move(job_id: str, current: JobStatus, target: JobStatus, action: str) -> None:
    """Raise a clear error unless a job in `current` may go to `target`."""
    if not can_move(current, target):
        raise refusal(job_id, current, action)
