"""OpenAI's graders endpoints: POST /v1/fine_tuning/alpha/graders/validate checks a
grader (a 400 naming the field when it is bad), /run grades one model sample with it.
Project keys; model graders call the models that project may call. docs/graders.md."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from openft.api.auth import CurrentPrincipal, ServicesDep
from openft.api.errors import error_responses
from openft.api.responses import JSON

router = APIRouter(
    prefix="/v1/fine_tuning/alpha/graders",
    tags=["fine-tuning"],
    responses=error_responses(400, 401, 422),
)

GraderObject = dict[str, Any]


class RunGraderRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    grader: GraderObject = Field(
        description="A string_check, text_similarity, python, score_model or multi grader."
    )
    model_sample: str = Field(
        description="The sample graded: `sample.output_text`, and `sample.output_json` "
        "when it is valid JSON."
    )
    item: dict[str, Any] | None = Field(
        default=None, description="The dataset row the grader reads as `item`."
    )


class ValidateGraderRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    grader: GraderObject


class GraderErrors(TypedDict):
    formula_parse_error: bool
    sample_parse_error: bool
    truncated_observation_error: bool
    unresponsive_reward_error: bool
    invalid_variable_error: bool
    other_error: bool
    python_grader_server_error: bool
    python_grader_server_error_type: str | None
    python_grader_runtime_error: bool
    python_grader_runtime_error_details: str | None
    model_grader_server_error: bool
    model_grader_refusal_error: bool
    model_grader_parse_error: bool
    model_grader_server_error_details: str | None


class GraderMetadata(TypedDict):
    name: str
    type: str
    errors: GraderErrors
    execution_time: float
    scores: dict[str, float]
    token_usage: int | None
    sampled_model_name: str | None


class RunGraderResponse(TypedDict):
    reward: float
    metadata: GraderMetadata
    sub_rewards: dict[str, float]
    model_grader_token_usage_per_model: dict[str, dict[str, int]]


class ValidateGraderResponse(TypedDict):
    grader: GraderObject


@router.post("/run", response_model=RunGraderResponse, operation_id="runGrader")
async def run_grader(
    body: RunGraderRequest, services: ServicesDep, principal: CurrentPrincipal
) -> JSON:
    result = await services.graders.run(
        principal.project_id, body.grader, body.model_sample, body.item
    )
    return JSON(result)


@router.post("/validate", response_model=ValidateGraderResponse, operation_id="validateGrader")
async def validate_grader(
    body: ValidateGraderRequest, services: ServicesDep, principal: CurrentPrincipal
) -> JSON:
    return JSON({"grader": await services.graders.validate(principal.project_id, body.grader)})
