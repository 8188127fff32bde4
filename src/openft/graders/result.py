"""What a grader reads (`Sample`) and what it answers (`GradeResult`), in the shape of
OpenAI's `RunGraderResponse.metadata`: every error flag is always present, so a client
never has to guess whether a missing flag means false."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# OpenAI's error flags (RunGraderResponse.metadata.errors): booleans, except the three
# "details"/"type" entries, which are text or None.
FLAGS = (
    "formula_parse_error",
    "sample_parse_error",
    "truncated_observation_error",
    "unresponsive_reward_error",
    "invalid_variable_error",
    "other_error",
    "python_grader_server_error",
    "python_grader_runtime_error",
    "model_grader_server_error",
    "model_grader_refusal_error",
    "model_grader_parse_error",
)
DETAILS = (
    "python_grader_server_error_type",
    "python_grader_runtime_error_details",
    "model_grader_server_error_details",
)


def no_errors() -> dict[str, bool]:
    return dict.fromkeys(FLAGS, False)


@dataclass
class Sample:
    """One model output as the `sample` namespace shows it: `output_json` is filled when
    the job (or the run request) has a JSON reply, `output_tools` when the model called
    tools."""

    output_text: str = ""
    output_json: Any = None
    output_tools: list[Any] | None = None

    def namespace(self) -> dict[str, Any]:
        return {
            "output_text": self.output_text,
            "output_json": self.output_json,
            "output_tools": self.output_tools if self.output_tools is not None else [],
        }


@dataclass
class GradeResult:
    """One grade. `errors` holds every boolean flag of OpenAI's list; `details` the text
    ones (None when there is nothing to say). A grade with an error has reward 0."""

    reward: float
    name: str
    type: str
    errors: dict[str, bool] = field(default_factory=no_errors)
    execution_time: float = 0.0
    scores: dict[str, float] = field(default_factory=dict)
    token_usage: dict[str, int] | None = None
    sampled_model_name: str | None = None
    sub_rewards: dict[str, float] = field(default_factory=dict)
    details: dict[str, str | None] = field(default_factory=lambda: dict.fromkeys(DETAILS))
    # Tokens each grader model used (the response's `model_grader_token_usage_per_model`).
    usage_per_model: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return any(self.errors.values())

    def error_object(self) -> dict[str, bool | str | None]:
        """`metadata.errors` exactly as OpenAI writes it."""
        out: dict[str, bool | str | None] = {}
        for flag in FLAGS:
            out[flag] = self.errors.get(flag, False)
        for key in DETAILS:
            out[key] = self.details.get(key)
        return out


def failure(
    name: str, kind: str, flag: str, detail_key: str | None = None, detail: str | None = None
) -> GradeResult:
    """A reward of 0 with `flag` raised (and its text, where OpenAI has a place for it)."""
    result = GradeResult(reward=0.0, name=name, type=kind)
    result.errors[flag] = True
    if detail_key is not None:
        result.details[detail_key] = detail
    return result


def add_usage(total: dict[str, int] | None, usage: dict[str, int]) -> dict[str, int]:
    merged = dict(total or {})
    for key, value in usage.items():
        merged[key] = merged.get(key, 0) + value
    return merged
