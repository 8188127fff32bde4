"""The worker protocol's messages, defined once: the API validates what workers send and
builds its answers with them, and `WorkerClient` sends and reads the same classes.
Routes and semantics: api/routes/worker.py and docs/workers.md.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from openft.domain.entities import Control, EventDraft, EventLevel, EventType, JobError
from openft.wire import FineTuningJob, FineTuningJobCheckpoint

WORKER_HEADER = "OpenFT-Worker"
MAX_BATCH_EVENTS = 10_000


class ClaimRequest(BaseModel):
    worker_id: str = Field(min_length=1, max_length=128)


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


class Heartbeat(BaseModel):
    trained_tokens: int | None = None
    estimated_finish: int | None = None


class HeartbeatReply(BaseModel):
    control: Control | None


class EventIn(BaseModel):
    message: str
    level: EventLevel = EventLevel.INFO
    type: EventType = EventType.MESSAGE
    data: dict[str, Any] = Field(default_factory=dict)
    created_at: int | None = None

    def draft(self) -> EventDraft:
        return EventDraft(self.message, self.level, self.type, self.data, self.created_at)

    @classmethod
    def of(cls, draft: EventDraft) -> EventIn:
        return cls(message=draft.message, level=draft.level, type=draft.type, data=draft.data)


class EventBatch(BaseModel):
    batch: int = Field(ge=1, description="Numbers a worker's batches 1, 2, ... per attempt.")
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

    step: int = Field(ge=1)
    metrics: dict[str, float] = Field(default_factory=dict)


class CompletionMeta(BaseModel):
    """The `meta` field of a completion (its `archive` is the adapter as a tar.gz)."""

    trained_tokens: int = Field(ge=0)
