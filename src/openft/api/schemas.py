"""OpenAI's request bodies, validated as the API receives them (responses: `openft.wire`)."""

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
    model_validator,
)
from pydantic_core import PydanticCustomError

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
        if kind is int and isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON has one number type: 3.0 is the integer 3
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
_COMPUTE = auto_or(float, "a number greater than 0 and at most 10", gt=0, le=10)
_INTERVAL = auto_or(int, "an integer of 1 or more", ge=1)
BatchSize = Annotated[int | Auto, _BATCH[0], _BATCH[1]]
LearningRate = Annotated[float | Auto, _RATE[0], _RATE[1]]
Epochs = Annotated[int | Auto, _EPOCHS[0], _EPOCHS[1]]
Beta = Annotated[float | Auto, _BETA[0], _BETA[1]]
ComputeMultiplier = Annotated[float | Auto, _COMPUTE[0], _COMPUTE[1]]
Interval = Annotated[int | Auto, _INTERVAL[0], _INTERVAL[1]]
MetadataMap = Annotated[
    dict[
        Annotated[str, StringConstraints(max_length=64)],
        Annotated[str, StringConstraints(max_length=512)],
    ],
    Field(max_length=16),
]


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        # No text openft keeps may hold NUL (PostgreSQL's cannot): refused on every database.
        if _holds_nul(data):
            raise ValueError("text may not contain NUL (\\u0000) characters")
        return data


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


class ReinforcementHyperparameters(SupervisedHyperparameters):
    reasoning_effort: Literal["default", "low", "medium", "high"] = "default"
    compute_multiplier: ComputeMultiplier = "auto"
    eval_interval: Interval = "auto"
    eval_samples: Interval = "auto"


class ReinforcementMethod(Strict):
    # Checked by openft.graders when the job is created (a 400 naming the field).
    grader: dict[str, Any]
    hyperparameters: ReinforcementHyperparameters | None = None
    response_format: dict[str, Any] | None = None


class SupervisedMethod(Strict):
    hyperparameters: SupervisedHyperparameters | None = None


class DpoMethod(Strict):
    hyperparameters: DpoHyperparameters | None = None


class MethodRequest(Strict):
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedMethod | None = None
    dpo: DpoMethod | None = None
    reinforcement: ReinforcementMethod | None = None


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


class StreamOptions(BaseModel):
    include_usage: bool | None = None


class ChatCompletionRequest(BaseModel):
    """The parameters openft reads; others are kept (`model_extra`) so that the service
    can refuse what it cannot honour and ignore what does not change the answer."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[Any]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None


class CreateCheckpointPermissionRequest(Strict):
    project_ids: list[str] = Field(max_length=1000, description="The projects to grant.")
