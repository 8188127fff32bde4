"""Domain entities. Stores return these, never database rows."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, Literal, NamedTuple, TypeVar

from openft.domain.ids import event_id, parse_event_id

Auto = Literal["auto"]
JsonObject = dict[str, Any]
T = TypeVar("T")


class JobStatus(StrEnum):
    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class EventLevel(StrEnum):
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


class EventType(StrEnum):
    MESSAGE = "message"
    METRICS = "metrics"


class Control(StrEnum):
    """A request a running job's worker must act on at its next step."""

    CANCEL = "cancel"
    PAUSE = "pause"


class KeyScope(StrEnum):
    """`project` keys use the public API; `worker` keys may also report into jobs;
    `admin` keys manage the organisation (checkpoint permissions), and nothing else."""

    PROJECT = "project"
    WORKER = "worker"
    ADMIN = "admin"


class FileFormat(StrEnum):
    CHAT = "chat"
    PREFERENCE = "preference"


class MethodType(StrEnum):
    SUPERVISED = "supervised"
    DPO = "dpo"
    REINFORCEMENT = "reinforcement"


@dataclass(frozen=True, slots=True)
class Project:
    id: str
    name: str
    created_at: int


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the project a key belongs to, what the key may do, and its id."""

    project_id: str
    scope: KeyScope
    key_id: str = ""

    def holder(self, worker_id: str) -> str:
        return holder_name(self.key_id, worker_id)


def holder_name(key_id: str, worker_id: str = "") -> str:
    """The name a worker's hold on a job is kept under: the id of its key and the name it
    gave itself (without one: the prefix of every worker of that key). A key can act only
    as the workers it started: another key that copies a worker's name (shown in the
    job's events) holds nothing."""
    return f"{key_id}/{worker_id}"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as an administrator sees it: never the key itself."""

    id: str
    project_id: str
    project_name: str
    scope: KeyScope
    created_at: int
    last_used_at: int | None = None
    revoked_at: int | None = None

    @property
    def principal(self) -> Principal:
        return Principal(self.project_id, self.scope, self.id)


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    id: str
    project_id: str
    url: str
    secret: str
    created_at: int


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One event for one endpoint, and how its delivery went so far."""

    event_id: str
    type: str
    job_id: str
    created_at: int
    payload: str
    attempts: int
    next_attempt_at: int | None  # None: delivered, or given up
    delivered_at: int | None
    last_status: int | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class StoredFile:
    id: str
    project_id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    sha256: str
    format: FileFormat | None = None
    examples: int | None = None


RFT_HYPERPARAMETERS = ("reasoning_effort", "compute_multiplier", "eval_interval", "eval_samples")


@dataclass(frozen=True, slots=True)
class Hyperparameters:
    n_epochs: int | Auto = "auto"
    batch_size: int | Auto = "auto"
    learning_rate_multiplier: float | Auto = "auto"
    beta: float | Auto | None = None  # DPO only
    # Reinforcement only (None for the other methods): see domain.hyperparameters.
    reasoning_effort: str | None = None
    compute_multiplier: float | Auto | None = None
    eval_interval: int | Auto | None = None
    eval_samples: int | Auto | None = None
    # openft's extensions: the LoRA adapter and the longest sequence trained on.
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: str = "all-linear"  # or a comma-separated list of module names
    max_length: int = 1024

    def to_dict(self) -> JsonObject:
        out: JsonObject = {
            "batch_size": self.batch_size,
            "learning_rate_multiplier": self.learning_rate_multiplier,
            "n_epochs": self.n_epochs,
        }
        for name in (*RFT_HYPERPARAMETERS, "beta"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        out.update(
            lora_rank=self.lora_rank,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            lora_target_modules=self.lora_target_modules,
            max_length=self.max_length,
        )
        return out


@dataclass(frozen=True, slots=True)
class Method:
    type: MethodType
    hyperparameters: Hyperparameters
    # Reinforcement only: the grader as the request gave it (checked by openft.graders at
    # creation), and the JSON schema completions follow (`sample.output_json`).
    grader: JsonObject | None = None
    response_format: JsonObject | None = None

    @property
    def file_format(self) -> FileFormat:
        """The training-file format this method consumes."""
        return FileFormat.PREFERENCE if self.type is MethodType.DPO else FileFormat.CHAT

    def to_dict(self) -> JsonObject:
        """OpenAI's `method` object: the job echoes it, the store keeps it, the worker
        reads it (`from_dict`)."""
        section: JsonObject = {"hyperparameters": self.hyperparameters.to_dict()}
        if self.type is MethodType.REINFORCEMENT:
            section["grader"] = self.grader
            if self.response_format is not None:
                section["response_format"] = self.response_format
        return {"type": self.type.value, self.type.value: section}

    @classmethod
    def from_dict(cls, value: JsonObject) -> Method:
        """The inverse of `to_dict`. Also reads the form stored before it (`hyperparameters`
        beside `type`), which older databases hold."""
        kind = MethodType(value["type"])
        section = value.get(kind.value) or value
        return cls(
            kind,
            Hyperparameters(**section["hyperparameters"]),
            grader=section.get("grader"),
            response_format=section.get("response_format"),
        )


@dataclass(frozen=True, slots=True)
class JobError:
    code: str
    message: str
    param: str | None = None


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    project_id: str
    model: str
    training_file: str
    validation_file: str | None
    status: JobStatus
    created_at: int
    method: Method
    seed: int
    event_key: str
    suffix: str | None = None
    metadata: dict[str, str] | None = None
    finished_at: int | None = None
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    estimated_finish: int | None = None
    error: JobError | None = None
    result_files: list[str] = field(default_factory=list)
    # A pending request the worker must act on at its next step.
    control: Control | None = None
    lease: Lease | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a job becomes when a worker's hold on it ends: its next status and what
    comes with it (the error of a failure, the model and results of a success)."""

    status: JobStatus
    error: JobError | None = None
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    result_files: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EventLog:
    """Where a job's event log stands: what reading a page of it needs, without the job."""

    job_id: str
    event_key: str
    last_seq: int
    project_id: str
    status: JobStatus

    def seq_of(self, event_id: str) -> int | None:
        """The sequence number of `event_id` if it is an event of this log, else None.
        Sequence numbers are gap-free from 1, so the range check is an existence check."""
        parsed = parse_event_id(event_id)
        if parsed is None or parsed[0] != self.event_key or parsed[1] > self.last_seq:
            return None
        return parsed[1]


@dataclass(frozen=True, slots=True)
class MetadataFilter:
    """Jobs whose metadata holds every key of `pairs` with its value; with `pairs`
    None, the jobs created without metadata (OpenAI's `metadata=null`)."""

    pairs: dict[str, str] | None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    id: str
    job_id: str
    step_number: int
    created_at: int
    metrics: JsonObject
    fine_tuned_model_checkpoint: str


@dataclass(frozen=True, slots=True)
class CheckpointPermission:
    """A project's right to use another project's fine-tuned model or checkpoint, named by
    its model name (`ft:…` or `ft:…:ckpt-step-N`)."""

    id: str
    model: str
    project_id: str
    created_at: int


@dataclass(frozen=True, slots=True)
class Lease:
    """A running job's hold by one worker: who, since when, and which attempt."""

    worker_id: str
    heartbeat_at: int
    attempts: int
    worker_batch: int
    reported_step: int


@dataclass(frozen=True, slots=True)
class EventDraft:
    """An event not yet appended: the store gives it its sequence number and id."""

    message: str
    level: EventLevel = EventLevel.INFO
    type: EventType = EventType.MESSAGE
    data: JsonObject = field(default_factory=dict)
    created_at: int | None = None


class Event(NamedTuple):
    """A stored event. A NamedTuple, not a dataclass: pages build thousands per second
    and a tuple is several times cheaper to create than a frozen dataclass."""

    job_event_key: str
    seq: int
    created_at: int
    level: EventLevel
    type: EventType
    message: str
    data: JsonObject

    @property
    def id(self) -> str:
        return event_id(self.job_event_key, self.seq)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a newest-first list and whether older items remain."""

    items: list[T]
    has_more: bool


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model as `/v1/models` lists it."""

    id: str
    created: int
    owned_by: str


@dataclass(frozen=True, slots=True)
class BaseModel:
    """A base model the server offers: a public name and where its weights come from."""

    name: str
    source: str


@dataclass(frozen=True, slots=True)
class Start:
    """What a model name stands for when a job trains on it or a chat completion runs it:
    a base model, with the adapter of a fine-tuned model (`job_id`) or of one of its
    checkpoints (`checkpoint_id` too) on top, or none."""

    base: BaseModel
    job_id: str | None = None
    checkpoint_id: str | None = None


@dataclass(frozen=True, slots=True)
class ServedModel:
    """A model a chat completion can run on: a base model, with the LoRA adapter of a
    fine-tuned model or checkpoint on top (a local directory of peft's files), or none."""

    name: str
    base: BaseModel
    adapter: str | None = None


@dataclass(frozen=True, slots=True)
class Blob:
    """Stored bytes opened for reading: their length, and the bytes in chunks (read once)."""

    size: int
    chunks: Iterator[bytes]
