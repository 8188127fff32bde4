"""The worker protocol's messages, defined once: the API validates what workers send and
builds its answers with them, and `WorkerClient` sends and reads the same classes.
Routes and semantics: api/routes/worker.py and docs/workers.md.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator

from openft.domain.entities import Control, EventDraft, EventLevel, EventType, JobError
from openft.wire import FineTuningJob, FineTuningJobCheckpoint

WORKER_HEADER = "OpenFT-Worker"
MAX_BATCH_EVENTS = 10_000
# Every integer a worker sends is stored in a 64-bit column or encoded by orjson, which
# both stop at 2**63 - 1: a larger one is refused here (422), never met later as a 500.
INT64 = 2**63 - 1
Count = Annotated[int, Field(ge=0, le=INT64)]


def _check_integers(value: Any, path: str) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int) and not -INT64 - 1 <= value <= INT64:
        raise ValueError(f"{path} is out of the 64-bit integer range")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_integers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_integers(item, f"{path}[{index}]")


# A worker names itself in at most this many characters; its hold is kept under its key's
# id and that name (`Principal.holder`), within the lease column's 128.
MAX_WORKER_ID = 96


class ClaimRequest(BaseModel):
    worker_id: str = Field(min_length=1, max_length=MAX_WORKER_ID)


class BaseModelSource(BaseModel):
    name: str
    source: str  # a Hugging Face id or a local directory, as the worker loads it


class ClaimReply(BaseModel):
    """A claimed job: the public job object (its hyperparameters resolved) and what
    running it needs."""

    job: FineTuningJob
    base_model: BaseModelSource
    attempt: int
    resume_from: FineTuningJobCheckpoint | None
    reported_step: int
    fine_tuned_model: str
    # The fine-tuned model or checkpoint whose adapter the job goes on training (its
    # archive at GET /jobs/{job id}/start/archive); None: a new adapter on the base model.
    start_from: str | None = None


class Heartbeat(BaseModel):
    trained_tokens: Count | None = None
    estimated_finish: Count | None = None


class HeartbeatReply(BaseModel):
    control: Control | None


class EventIn(BaseModel):
    message: str
    level: EventLevel = EventLevel.INFO
    type: EventType = EventType.MESSAGE
    data: dict[str, Any] = Field(default_factory=dict)
    created_at: Count | None = None

    @field_validator("data")
    @classmethod
    def _integers_in_range(cls, data: dict[str, Any]) -> dict[str, Any]:
        _check_integers(data, "data")
        return data

    def draft(self) -> EventDraft:
        return EventDraft(self.message, self.level, self.type, self.data, self.created_at)

    @classmethod
    def of(cls, draft: EventDraft) -> EventIn:
        return cls(message=draft.message, level=draft.level, type=draft.type, data=draft.data)


class EventBatch(BaseModel):
    batch: int = Field(
        ge=1, le=INT64, description="Numbers a worker's batches 1, 2, ... per attempt."
    )
    events: list[EventIn] = Field(max_length=MAX_BATCH_EVENTS)


class BatchReply(BaseModel):
    applied: bool


class Failure(BaseModel):
    code: str
    message: str
    param: str | None = None

    def error(self) -> JobError:
        return JobError(self.code, self.message, self.param)


class CheckpointMeta(BaseModel):
    """The `meta` field of a checkpoint upload (its `archive` is a tar.gz)."""

    step: int = Field(ge=1, le=INT64)
    metrics: dict[str, float] = Field(default_factory=dict)


class CompletionMeta(BaseModel):
    """The `meta` field of a completion (its `archive` is the adapter as a tar.gz)."""

    trained_tokens: Count


class GraderCall(BaseModel):
    """A reinforcement job's model grader calling a model while the job trains."""

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]]
    sampling: dict[str, Any] = Field(default_factory=dict)
    response_format: dict[str, Any] | None = None


class GraderReply(BaseModel):
    text: str
    usage: dict[str, int]
