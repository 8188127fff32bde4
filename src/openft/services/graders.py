"""The graders endpoints' use cases: validate a grader, and run one on a model sample.
Model graders call the server's own chat completions (any model the project may call:
a base model, its fine-tuned models and checkpoints, those shared with it)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from openft.domain import chat
from openft.domain.errors import InvalidRequest, ModelUnavailable, NotFound
from openft.graders import GradeResult, ModelCallError, Sample, Sandbox, grade, models_called, parse
from openft.graders.spec import Grader
from openft.services.inference import InferenceService
from openft.services.models import ModelService
from openft.serving.interface import Piece, Usage


class ServedModels:
    """A `ModelCaller` over openft's own chat completions, as the project `project_id`
    (so it may call exactly the models that project may call)."""

    def __init__(self, inference: InferenceService, project_id: str) -> None:
        self._inference = inference
        self._project_id = project_id

    async def __call__(
        self,
        model: str,
        messages: list[dict[str, Any]],
        sampling: dict[str, Any],
        response_format: dict[str, Any] | None,
    ) -> tuple[str, dict[str, Any]]:
        # This server's engines generate free text only: the reply is read leniently
        # (openft.graders.model_graders), and `response_format` is not enforced.
        del response_format
        try:
            checked = chat.sampling(
                max_completion_tokens=sampling.get("max_completions_tokens"),
                temperature=sampling.get("temperature"),
                top_p=sampling.get("top_p"),
                seed=sampling.get("seed"),
                caps=self._inference.caps,
            )
            request = await asyncio.to_thread(
                self._inference.prepare, self._project_id, model, messages, checked
            )
            text: list[str] = []
            usage: dict[str, Any] = {}
            async for output in self._inference.generate(request):
                if isinstance(output, Piece) and output.index == 0:
                    text.append(output.text)
                elif isinstance(output, Usage):
                    usage = {
                        "prompt_tokens": output.prompt_tokens,
                        "completion_tokens": output.completion_tokens,
                    }
        except (InvalidRequest, NotFound, ModelUnavailable) as exc:
            raise ModelCallError(f"{model}: {exc.message}") from None
        return "".join(text), usage


class GraderService:
    def __init__(
        self, inference: InferenceService, models: ModelService, sandbox: Sandbox | None = None
    ) -> None:
        self._inference = inference
        self._models = models
        self.sandbox = sandbox or Sandbox()

    async def validate(self, project_id: str, raw: Any) -> dict[str, Any]:
        """The grader as given, once every part of it checks out (a 400 naming the field
        otherwise), the models it calls included."""
        grader = parse(raw)
        await self._check_models(project_id, grader, "grader")
        return grader.spec

    async def run(
        self, project_id: str, raw: Any, model_sample: str, item: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """OpenAI's RunGraderResponse for `model_sample` graded against `item`."""
        grader = parse(raw)
        await self._check_models(project_id, grader, "grader")
        if item is not None and not isinstance(item, Mapping):
            raise InvalidRequest("'item' must be an object.", param="item")
        sample = Sample(output_text=model_sample, output_json=_json_or_none(model_sample))
        models = ServedModels(self._inference, project_id)
        result = await grade(grader, sample, dict(item or {}), models, self.sandbox)
        return run_response(result)

    async def call_model(
        self,
        project_id: str,
        model: str,
        messages: list[dict[str, Any]],
        sampling: dict[str, Any],
        response_format: dict[str, Any] | None,
    ) -> tuple[str, dict[str, Any]]:
        """A model grader's call made by a reinforcement job's trainer, as its project:
        (the reply's text, its usage); a model the project may not call is a 400."""
        try:
            return await ServedModels(self._inference, project_id)(
                model, messages, sampling, response_format
            )
        except ModelCallError as exc:
            raise InvalidRequest(str(exc), param="model", code="model_not_found") from None

    async def _check_models(self, project_id: str, grader: Grader, param: str) -> None:
        """A 400 at a model grader's `model` unless the project may call that model."""
        for model, at in models_called(grader, param):
            await asyncio.to_thread(self._models.callable, project_id, model, at)


def _json_or_none(text: str) -> Any:
    """OpenAI fills `sample.output_json` when the model sample is valid JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return None


def run_response(result: GradeResult) -> dict[str, Any]:
    """OpenAI's RunGraderResponse. `token_usage` is the total token count (the spec types
    it as an integer); the breakdown is in `model_grader_token_usage_per_model`."""
    return {
        "reward": result.reward,
        "metadata": {
            "name": result.name,
            "type": result.type,
            "errors": result.error_object(),
            "execution_time": result.execution_time,
            "scores": result.scores,
            "token_usage": (
                None if result.token_usage is None else result.token_usage["total_tokens"]
            ),
            "sampled_model_name": result.sampled_model_name,
        },
        "sub_rewards": result.sub_rewards,
        "model_grader_token_usage_per_model": result.usage_per_model,
    }
