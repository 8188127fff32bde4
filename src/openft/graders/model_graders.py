"""`score_model` and `label_model`: a model reads the rendered `input` messages and
answers with a score or a label, through a `ModelCaller` (the API's calls openft's own
chat completions; the trainer may pass its own).

A reply is read as JSON `{"result": …}` (the shape OpenAI's structured output asks for;
`score`/`label` are read too) or as the bare score or label; a reply that cannot be
read, a score outside `range`, or a label not among `labels` scores 0 with
`model_grader_parse_error`."""

from __future__ import annotations

import json
import math
import re
from typing import Any, Protocol

from openft.graders.spec import LabelModelGrader, ModelGrader, ScoreModelGrader


class ModelCaller(Protocol):
    async def __call__(
        self,
        model: str,
        messages: list[dict[str, Any]],
        sampling: dict[str, Any],
        response_format: dict[str, Any] | None,
    ) -> tuple[str, dict[str, Any]]:
        """(the reply's text, its usage: prompt_tokens, completion_tokens, …)."""
        ...


class ModelCallError(Exception):
    """The grader model could not be called (unknown model, engine down): a server error
    of the grade, not of the grader."""


class ReplyUnreadable(Exception):
    pass


def response_format(grader: ModelGrader) -> dict[str, Any]:
    """The JSON schema of the reply, for a caller whose engine can enforce it."""
    if isinstance(grader, LabelModelGrader):
        result: dict[str, Any] = {"type": "string", "enum": list(grader.labels)}
    else:
        assert isinstance(grader, ScoreModelGrader)
        low, high = grader.range
        result = {"type": "number", "minimum": low, "maximum": high}
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "grade",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"result": result},
                "required": ["result"],
                "additionalProperties": False,
            },
        },
    }


def _result(reply: str) -> Any:
    text = reply.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.DOTALL)
    if fenced:
        text = fenced.group(1)
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, dict):
        for key in ("result", "score", "label", "grade"):
            if key in value:
                return value[key]
        raise ReplyUnreadable(f"the reply's JSON has no 'result': {reply[:200]!r}")
    return value


def read_score(grader: ScoreModelGrader, reply: str) -> float:
    value = _result(reply)
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ReplyUnreadable(f"the reply is not a score: {reply[:200]!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ReplyUnreadable(f"the reply is not a score: {reply[:200]!r}")
    low, high = grader.range
    if not low <= value <= high:
        raise ReplyUnreadable(f"the score {value} is outside the range [{low:g}, {high:g}]")
    return float(value)


def read_label(grader: LabelModelGrader, reply: str) -> str:
    value = _result(reply)
    if isinstance(value, str):
        label = value.strip().strip("\"'.").strip()
        if label in grader.labels:
            return label
        folded = {known.casefold(): known for known in grader.labels}
        if label.casefold() in folded:
            return folded[label.casefold()]
    raise ReplyUnreadable(f"the reply is not one of the labels: {reply[:200]!r}")
