"""Wire shapes: OpenAI's request and response objects, and conversions from the domain.

Response models document the API in /openapi.json; routes return the `*_json` dicts
directly, so a hot path (an events page) is serialised once, without a second validation.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from openft.domain.entities import Checkpoint, Event, Job, StoredFile
from openft.services.models import ModelInfo

Auto = Literal["auto"]


def auto_or(
    kind: type[int] | type[float], description: str, **bounds: float
) -> tuple[PlainValidator, WithJsonSchema]:
    """Validation and schema of a hyperparameter: "auto" or a number within `bounds`
    (Field's ge/gt/le).

    One validator rather than a Union, so an error names the parameter itself
    (`hyperparameters.n_epochs`), not a union branch, and says what is accepted.
    """
    constraints = Field(strict=True, **bounds)  # type: ignore[call-overload]
    number: TypeAdapter[float] = TypeAdapter(Annotated[kind, constraints])  # type: ignore[arg-type]

    def check(value: Any) -> Any:
        if value == "auto":
            return value
        try:
            return number.validate_python(value)
        except ValidationError:
            raise PydanticCustomError(
                "auto_or_number", f"Input should be 'auto' or {description}"
            ) from None

    bound_keys = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum"}
    schema = {
        "oneOf": [
            {"type": "string", "enum": ["auto"]},
            {
                "type": "integer" if kind is int else "number",
                **{bound_keys[k]: v for k, v in bounds.items()},
            },
        ],
        "default": "auto",
    }
    return PlainValidator(check), WithJsonSchema(schema)


_BATCH = auto_or(int, "an integer from 1 to 256", ge=1, le=256)
_RATE = auto_or(float, "a number greater than 0", gt=0)
_EPOCHS = auto_or(int, "an integer from 1 to 50", ge=1, le=50)
_BETA = auto_or(float, "a number greater than 0 and at most 2", gt=0, le=2)
BatchSize = Annotated[int | Auto, _BATCH[0], _BATCH[1]]
LearningRate = Annotated[float | Auto, _RATE[0], _RATE[1]]
Epochs = Annotated[int | Auto, _EPOCHS[0], _EPOCHS[1]]
Beta = Annotated[float | Auto, _BETA[0], _BETA[1]]
MetadataMap = Annotated[
    dict[
        Annotated[str, StringConstraints(max_length=64)],
        Annotated[str, StringConstraints(max_length=512)],
    ],
    Field(max_length=16),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests -------------------------------------------------------------------


class SupervisedHyperparameters(Strict):
    batch_size: BatchSize = "auto"
    learning_rate_multiplier: LearningRate = "auto"
    n_epochs: Epochs = "auto"
    # openft's extensions (None: the server's default, see docs/training.md).
    lora_rank: Annotated[int, Field(ge=1, le=512)] | None = None
    lora_alpha: Annotated[int, Field(ge=1, le=4096)] | None = None
    lora_dropout: Annotated[float, Field(ge=0, lt=1)] | None = None
    lora_target_modules: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = (
        None
    )
    max_length: Annotated[int, Field(ge=16, le=131_072)] | None = None


class DpoHyperparameters(SupervisedHyperparameters):
    beta: Beta = "auto"


class SupervisedMethod(Strict):
    hyperparameters: SupervisedHyperparameters | None = None


class DpoMethod(Strict):
    hyperparameters: DpoHyperparameters | None = None


class MethodRequest(Strict):
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedMethod | None = None
    dpo: DpoMethod | None = None
    reinforcement: dict[str, Any] | None = None


class CreateJobRequest(Strict):
    model: str = Field(min_length=1)
    training_file: str = Field(min_length=1)
    validation_file: str | None = None
    hyperparameters: SupervisedHyperparameters | None = Field(default=None, deprecated=True)
    method: MethodRequest | None = None
    suffix: (
        Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
        | None
    ) = None
    seed: Annotated[int, Field(ge=0, le=2_147_483_647)] | None = None
    metadata: MetadataMap | None = None
    integrations: list[dict[str, Any]] | None = None


# -- responses ------------------------------------------------------------------


class OpenAIFile(BaseModel):
    id: str
    object: Literal["file"]
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"


class ListFilesResponse(BaseModel):
    object: Literal["list"]
    data: list[OpenAIFile]
    first_id: str | None
    last_id: str | None
    has_more: bool


class DeleteFileResponse(BaseModel):
    id: str
    object: Literal["file"]
    deleted: bool


class FineTuningJobError(BaseModel):
    code: str
    message: str
    param: str | None


class FineTuningJob(BaseModel):
    object: Literal["fine_tuning.job"]
    id: str
    model: str
    created_at: int
    finished_at: int | None
    fine_tuned_model: str | None
    organization_id: str
    result_files: list[str]
    status: Literal[
        "validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"
    ]
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


class ListPaginatedFineTuningJobsResponse(BaseModel):
    object: Literal["list"]
    data: list[FineTuningJob]
    has_more: bool


class FineTuningJobEvent(BaseModel):
    """Compatible with OpenAI's FineTuningJobEvent and Nebius' (seed 002)."""

    object: Literal["fine_tuning.job.event"]
    id: str
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"]
    data: dict[str, Any]


class ListFineTuningJobEventsResponse(BaseModel):
    object: Literal["list"]
    data: list[FineTuningJobEvent]
    has_more: bool


class FineTuningJobCheckpoint(BaseModel):
    object: Literal["fine_tuning.job.checkpoint"]
    id: str
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, float]
    step_number: int


class ListFineTuningJobCheckpointsResponse(BaseModel):
    object: Literal["list"]
    data: list[FineTuningJobCheckpoint]
    first_id: str | None
    last_id: str | None
    has_more: bool


class Model(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ListModelsResponse(BaseModel):
    object: Literal["list"]
    data: list[Model]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


# -- conversions ------------------------------------------------------------------


def file_json(file: StoredFile) -> dict[str, Any]:
    return {
        "id": file.id,
        "object": "file",
        "bytes": file.bytes,
        "created_at": file.created_at,
        "filename": file.filename,
        "purpose": file.purpose,
        "status": "processed",
    }


def job_json(job: Job) -> dict[str, Any]:
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
        "status": job.status.value,
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


def event_json(event: Event) -> dict[str, Any]:
    return {
        "object": "fine_tuning.job.event",
        "id": event.id,
        "created_at": event.created_at,
        "level": event.level.value,
        "message": event.message,
        "type": event.type.value,
        "data": event.data,
    }


def model_json(model: ModelInfo) -> dict[str, Any]:
    return {"id": model.id, "object": "model", "created": model.created, "owned_by": model.owned_by}


def checkpoint_json(checkpoint: Checkpoint) -> dict[str, Any]:
    return {
        "object": "fine_tuning.job.checkpoint",
        "id": checkpoint.id,
        "created_at": checkpoint.created_at,
        "fine_tuned_model_checkpoint": checkpoint.fine_tuned_model_checkpoint,
        "fine_tuning_job_id": checkpoint.job_id,
        "metrics": checkpoint.metrics,
        "step_number": checkpoint.step_number,
    }


def id_list(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """A list page with OpenAI's `first_id` and `last_id` (null when it is empty)."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
