"""The public API's objects as they travel on the wire, in OpenAI's shapes, and their
conversions from the domain. Each shape is written once, as a TypedDict: FastAPI documents
it in /openapi.json, mypy checks every conversion against it, and at run time it is a
plain dict that routes serialise once (an events page is not validated a second time).
The worker protocol embeds the job object too, hence this module outside `api`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NotRequired

from typing_extensions import TypedDict

from openft.domain.entities import (
    Checkpoint,
    CheckpointPermission,
    Event,
    EventLevel,
    EventType,
    Job,
    JobStatus,
    ModelInfo,
    Page,
    StoredFile,
    WebhookDelivery,
    WebhookEndpoint,
)


class OpenAIFile(TypedDict):
    id: str
    object: Literal["file"]
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"]


class ListFilesResponse(TypedDict):
    object: Literal["list"]
    data: list[OpenAIFile]
    # Strings even for an empty page (""): OpenAI's schema has them required, non-null.
    first_id: str
    last_id: str
    has_more: bool


class DeleteFileResponse(TypedDict):
    id: str
    object: Literal["file"]
    deleted: bool


class FineTuningJobError(TypedDict):
    code: str
    message: str
    param: str | None


class FineTuningJob(TypedDict):
    object: Literal["fine_tuning.job"]
    id: str
    model: str
    created_at: int
    finished_at: int | None
    fine_tuned_model: str | None
    organization_id: str
    result_files: list[str]
    status: JobStatus
    validation_file: str | None
    training_file: str
    hyperparameters: dict[str, Any]
    trained_tokens: int | None
    error: FineTuningJobError | None
    seed: int
    estimated_finish: int | None
    integrations: list[dict[str, Any]]
    method: dict[str, Any]
    metadata: dict[str, str] | None
    user_provided_suffix: str | None


class ListPaginatedFineTuningJobsResponse(TypedDict):
    object: Literal["list"]
    data: list[FineTuningJob]
    has_more: bool


class FineTuningJobEvent(TypedDict):
    """Compatible with OpenAI's FineTuningJobEvent and Nebius' (seed 002)."""

    object: Literal["fine_tuning.job.event"]
    id: str
    created_at: int
    level: EventLevel
    message: str
    type: EventType
    data: dict[str, Any]


class ListFineTuningJobEventsResponse(TypedDict):
    object: Literal["list"]
    data: list[FineTuningJobEvent]
    has_more: bool


class FineTuningJobCheckpoint(TypedDict):
    object: Literal["fine_tuning.job.checkpoint"]
    id: str
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, float]
    step_number: int


class ListFineTuningJobCheckpointsResponse(TypedDict):
    object: Literal["list"]
    data: list[FineTuningJobCheckpoint]
    first_id: str | None
    last_id: str | None
    has_more: bool


class FineTuningCheckpointPermission(TypedDict):
    id: str
    object: Literal["checkpoint.permission"]
    created_at: int
    project_id: str


class ListFineTuningCheckpointPermissionResponse(TypedDict):
    object: Literal["list"]
    data: list[FineTuningCheckpointPermission]
    first_id: str | None
    last_id: str | None
    has_more: bool


class DeleteFineTuningCheckpointPermissionResponse(TypedDict):
    id: str
    object: Literal["checkpoint.permission"]
    deleted: bool


class Model(TypedDict):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class DeleteModelResponse(TypedDict):
    id: str
    object: Literal["model"]
    deleted: bool


class ChatCompletionMessage(TypedDict):
    role: Literal["assistant"]
    content: str
    refusal: None


class ChatCompletionChoice(TypedDict):
    index: int
    message: ChatCompletionMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None


class CompletionUsage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(TypedDict):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: CompletionUsage
    system_fingerprint: str


class ChatCompletionDelta(TypedDict, total=False):
    role: Literal["assistant"]
    content: str


class ChatCompletionChunkChoice(TypedDict):
    index: int
    delta: ChatCompletionDelta
    finish_reason: Literal["stop", "length"] | None
    logprobs: None


class ChatCompletionChunk(TypedDict, total=False):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatCompletionChunkChoice]
    system_fingerprint: str
    usage: CompletionUsage | None


class ListModelsResponse(TypedDict):
    object: Literal["list"]
    data: list[Model]


class Health(TypedDict):
    status: Literal["ok"]


class Readiness(TypedDict):
    status: Literal["ready", "unavailable"]
    # "ok", or why not: `database`, `blob_store`.
    checks: dict[str, str]


class ErrorObject(TypedDict):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(TypedDict):
    """OpenAI's error envelope: every 4xx and 5xx openft sends."""

    error: ErrorObject


class ValidationErrorItem(TypedDict):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorResponse(ErrorResponse):
    """A 422: OpenAI's envelope, and FastAPI's `detail` beside it (the Nebius seed's shape)."""

    detail: list[ValidationErrorItem]


# -- conversions ------------------------------------------------------------------


def file_json(file: StoredFile) -> OpenAIFile:
    return {
        "id": file.id,
        "object": "file",
        "bytes": file.bytes,
        "created_at": file.created_at,
        "filename": file.filename,
        "purpose": file.purpose,
        "status": "processed",
    }


def job_json(job: Job) -> FineTuningJob:
    hyper = job.method.hyperparameters
    return {
        "object": "fine_tuning.job",
        "id": job.id,
        "model": job.model,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "fine_tuned_model": job.fine_tuned_model,
        "organization_id": job.project_id,
        "result_files": job.result_files,
        "status": job.status,
        "validation_file": job.validation_file,
        "training_file": job.training_file,
        "hyperparameters": {
            "batch_size": hyper.batch_size,
            "learning_rate_multiplier": hyper.learning_rate_multiplier,
            "n_epochs": hyper.n_epochs,
        },
        "trained_tokens": job.trained_tokens,
        "error": (
            {"code": job.error.code, "message": job.error.message, "param": job.error.param}
            if job.error
            else None
        ),
        "seed": job.seed,
        "estimated_finish": job.estimated_finish,
        "integrations": [],
        "method": job.method.to_dict(),
        "metadata": job.metadata,
        "user_provided_suffix": job.suffix,
    }


def event_json(event: Event) -> FineTuningJobEvent:
    return {
        "object": "fine_tuning.job.event",
        "id": event.id,
        "created_at": event.created_at,
        "level": event.level,
        "message": event.message,
        "type": event.type,
        "data": event.data,
    }


def checkpoint_json(checkpoint: Checkpoint) -> FineTuningJobCheckpoint:
    return {
        "object": "fine_tuning.job.checkpoint",
        "id": checkpoint.id,
        "created_at": checkpoint.created_at,
        "fine_tuned_model_checkpoint": checkpoint.fine_tuned_model_checkpoint,
        "fine_tuning_job_id": checkpoint.job_id,
        "metrics": checkpoint.metrics,
        "step_number": checkpoint.step_number,
    }


def model_json(model: ModelInfo) -> Model:
    return {"id": model.id, "object": "model", "created": model.created, "owned_by": model.owned_by}


# -- lists ---------------------------------------------------------------------------


def _ends(
    data: Sequence[OpenAIFile] | Sequence[FineTuningJobCheckpoint],
) -> tuple[str, str] | tuple[None, None]:
    """OpenAI's `first_id` and `last_id` of a page (null when it is empty)."""
    return (data[0]["id"], data[-1]["id"]) if data else (None, None)


def files_list(page: Page[StoredFile]) -> ListFilesResponse:
    data = [file_json(file) for file in page.items]
    first, last = _ends(data)
    return {
        "object": "list",
        "data": data,
        "first_id": first or "",
        "last_id": last or "",
        "has_more": page.has_more,
    }


def jobs_list(page: Page[Job]) -> ListPaginatedFineTuningJobsResponse:
    return {"object": "list", "data": [job_json(j) for j in page.items], "has_more": page.has_more}


def events_list(page: Page[Event]) -> ListFineTuningJobEventsResponse:
    return {
        "object": "list",
        "data": [event_json(e) for e in page.items],
        "has_more": page.has_more,
    }


def checkpoints_list(page: Page[Checkpoint]) -> ListFineTuningJobCheckpointsResponse:
    data = [checkpoint_json(checkpoint) for checkpoint in page.items]
    first, last = _ends(data)
    return {
        "object": "list",
        "data": data,
        "first_id": first,
        "last_id": last,
        "has_more": page.has_more,
    }


def permission_json(permission: CheckpointPermission) -> FineTuningCheckpointPermission:
    return {
        "id": permission.id,
        "object": "checkpoint.permission",
        "created_at": permission.created_at,
        "project_id": permission.project_id,
    }


def permissions_list(
    permissions: Sequence[CheckpointPermission], has_more: bool = False
) -> ListFineTuningCheckpointPermissionResponse:
    data = [permission_json(permission) for permission in permissions]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def models_list(models: Sequence[ModelInfo]) -> ListModelsResponse:
    return {"object": "list", "data": [model_json(m) for m in models]}


# -- webhooks (openft's own API: OpenAI configures them in its dashboard) ----------------


class WebhookEndpointObject(TypedDict):
    id: str
    object: Literal["webhook_endpoint"]
    url: str
    created_at: int
    # Shown once, in the answer that creates the endpoint (as OpenAI shows a webhook's
    # secret once): receivers need it to verify signatures; a lost one means a new endpoint.
    secret: NotRequired[str]


class WebhookDeliveryObject(TypedDict):
    id: str  # the event's id: `webhook-id`
    object: Literal["webhook_delivery"]
    type: str
    job_id: str
    created_at: int
    attempts: int
    delivered_at: int | None
    next_attempt_at: int | None
    last_status: int | None
    last_error: str | None


class ListWebhookEndpoints(TypedDict):
    object: Literal["list"]
    data: list[WebhookEndpointObject]


class ListWebhookDeliveries(TypedDict):
    object: Literal["list"]
    data: list[WebhookDeliveryObject]


def webhook_json(endpoint: WebhookEndpoint, *, with_secret: bool = False) -> WebhookEndpointObject:
    shown: WebhookEndpointObject = {
        "id": endpoint.id,
        "object": "webhook_endpoint",
        "url": endpoint.url,
        "created_at": endpoint.created_at,
    }
    if with_secret:
        shown["secret"] = endpoint.secret
    return shown


def delivery_json(delivery: WebhookDelivery) -> WebhookDeliveryObject:
    return {
        "id": delivery.event_id,
        "object": "webhook_delivery",
        "type": delivery.type,
        "job_id": delivery.job_id,
        "created_at": delivery.created_at,
        "attempts": delivery.attempts,
        "delivered_at": delivery.delivered_at,
        "next_attempt_at": delivery.next_attempt_at,
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
    }
