"""Grading: one sample (`grade`, async) or a batch (`grade_batch`, for the trainer's
process: its samples concurrently, python graders in parallel sandboxes).

A grader never raises for what a sample or item holds: a missing template variable, a
python grader that fails, a grader model's unreadable reply, a formula that cannot be
computed all give a reward of 0 with the matching flag in `errors`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from openft.graders.expressions import ExpressionError
from openft.graders.model_graders import (
    ModelCaller,
    ModelCallError,
    ReplyUnreadable,
    read_label,
    read_score,
    response_format,
)
from openft.graders.python_sandbox import PythonLimits, Sandbox
from openft.graders.result import GradeResult, Sample, add_usage, failure
from openft.graders.spec import (
    Grader,
    LabelModelGrader,
    ModelGrader,
    MultiGrader,
    PythonGrader,
    ScoreModelGrader,
    StringCheckGrader,
    TextSimilarityGrader,
)
from openft.graders.templates import UnknownVariable, context


async def grade(
    grader: Grader,
    sample: Sample,
    item: Mapping[str, Any],
    models: ModelCaller | None = None,
    sandbox: Sandbox | None = None,
) -> GradeResult:
    """Grade one sample against its item. `sandbox` runs python graders (one is made from
    the OPENFT_GRADER_* variables when none is given)."""
    started = time.perf_counter()
    own = sandbox is None
    sandbox = sandbox or Sandbox()
    try:
        result = await _grade(grader, sample, dict(item), models, sandbox)
    finally:
        if own:
            await sandbox.aclose()
    result.execution_time = time.perf_counter() - started
    return result


def grade_batch(
    grader: Grader,
    samples: Sequence[Sample],
    items: Sequence[Mapping[str, Any]],
    models: ModelCaller | None = None,
    limits: PythonLimits | None = None,
) -> list[GradeResult]:
    """Grade `samples[i]` against `items[i]` for every i, concurrently (at most
    `limits.concurrency` python sandboxes at once). Blocking: it runs its own event loop
    (in a thread of its own when the calling thread already runs one)."""
    if len(samples) != len(items):
        raise ValueError(f"{len(samples)} samples but {len(items)} items")
    sandbox = Sandbox(limits)

    async def all_of_them() -> list[GradeResult]:
        pairs = zip(samples, items, strict=True)
        try:
            return list(
                await asyncio.gather(*(grade(grader, s, i, models, sandbox) for s, i in pairs))
            )
        finally:
            await sandbox.aclose()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(all_of_them())
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, all_of_them()).result()


async def _grade(
    grader: Grader,
    sample: Sample,
    item: dict[str, Any],
    models: ModelCaller | None,
    sandbox: Sandbox,
) -> GradeResult:
    if isinstance(grader, MultiGrader):
        return await _multi(grader, sample, item, models, sandbox)
    if isinstance(grader, PythonGrader):
        return await _python(grader, sample, item, sandbox)
    if isinstance(grader, ModelGrader):
        return await _model(grader, sample, item, models)
    variables = context(sample.namespace(), item)
    try:
        text = grader.input.render(variables)
        reference = grader.reference.render(variables)
    except UnknownVariable as exc:
        return _unknown(grader, exc, sample)
    if isinstance(grader, StringCheckGrader):
        from openft.graders.string_check import string_check

        reward = string_check(grader.operation, text, reference)
    else:
        assert isinstance(grader, TextSimilarityGrader)
        from openft.graders.similarity import similarity

        try:
            # The metrics' libraries are CPU-bound: off the event loop.
            reward = await asyncio.to_thread(similarity, grader.metric, text, reference)
        except Exception:  # a metric library failing on odd text: this grade only
            return failure(grader.name, grader.type, "other_error")
    return GradeResult(reward=reward, name=grader.name, type=grader.type)


def _unknown(grader: Grader | ModelGrader, exc: UnknownVariable, sample: Sample) -> GradeResult:
    """A variable the item or sample lacks; `sample_parse_error` when it is a path into
    `sample.output_json` and the sample was not JSON at all."""
    if exc.reference.startswith("sample.output_json") and sample.output_json is None:
        return failure(grader.name, grader.type, "sample_parse_error")
    return failure(grader.name, grader.type, "invalid_variable_error")


async def _python(
    grader: PythonGrader, sample: Sample, item: dict[str, Any], sandbox: Sandbox
) -> GradeResult:
    outcome = await sandbox.run(grader.source, sample.namespace(), item)
    if outcome.reward is not None:
        return GradeResult(reward=outcome.reward, name=grader.name, type=grader.type)
    if outcome.error == "server":
        result = failure(
            grader.name,
            grader.type,
            "python_grader_server_error",
            "python_grader_server_error_type",
            "sandbox_unavailable",
        )
        result.details["python_grader_runtime_error_details"] = outcome.details
        return result
    result = failure(
        grader.name,
        grader.type,
        "python_grader_runtime_error",
        "python_grader_runtime_error_details",
        outcome.details,
    )
    if outcome.error == "timeout":
        result.errors["unresponsive_reward_error"] = True
    return result


async def _model(
    grader: ModelGrader, sample: Sample, item: dict[str, Any], models: ModelCaller | None
) -> GradeResult:
    if models is None:
        return failure(
            grader.name,
            grader.type,
            "model_grader_server_error",
            "model_grader_server_error_details",
            "no model caller was given to this grader",
        )
    variables = context(sample.namespace(), item)
    try:
        messages = [
            {"role": m.role, "content": "".join(part.render(variables) for part in m.parts)}
            for m in grader.input
        ]
    except UnknownVariable as exc:
        return _unknown(grader, exc, sample)
    try:
        reply, usage = await models(
            grader.model, messages, grader.sampling.as_dict(), response_format(grader)
        )
    except ModelCallError as exc:
        return failure(
            grader.name,
            grader.type,
            "model_grader_server_error",
            "model_grader_server_error_details",
            str(exc),
        )
    tokens = _usage(usage)
    try:
        if isinstance(grader, ScoreModelGrader):
            reward = read_score(grader, reply)
        else:
            assert isinstance(grader, LabelModelGrader)
            reward = float(read_label(grader, reply) in grader.passing_labels)
    except ReplyUnreadable:
        result = failure(grader.name, grader.type, "model_grader_parse_error")
    else:
        result = GradeResult(reward=reward, name=grader.name, type=grader.type)
    result.token_usage = tokens
    result.sampled_model_name = grader.model
    result.usage_per_model = {grader.model: dict(tokens)}
    return result


def _usage(usage: Mapping[str, Any]) -> dict[str, int]:
    prompt = int(usage.get("prompt_tokens", 0))
    completion = int(usage.get("completion_tokens", 0))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": int(usage.get("total_tokens", prompt + completion)),
        "cached_tokens": int(usage.get("cached_tokens", 0)),
    }


async def _multi(
    grader: MultiGrader,
    sample: Sample,
    item: dict[str, Any],
    models: ModelCaller | None,
    sandbox: Sandbox,
) -> GradeResult:
    names = list(grader.graders)
    parts = await asyncio.gather(
        *(_grade(grader.graders[n], sample, item, models, sandbox) for n in names)
    )
    results = dict(zip(names, parts, strict=True))
    rewards = {name: r.reward for name, r in results.items()}
    out = GradeResult(reward=0.0, name=grader.name, type=grader.type)
    for part in parts:
        for flag, raised in part.errors.items():
            out.errors[flag] = out.errors.get(flag, False) or raised
        for key, text in part.details.items():
            if text is not None and out.details.get(key) is None:
                out.details[key] = text
        if part.token_usage is not None:
            out.token_usage = add_usage(out.token_usage, part.token_usage)
        for model, usage in part.usage_per_model.items():
            out.usage_per_model[model] = add_usage(out.usage_per_model.get(model), usage)
        if part.sampled_model_name is not None and out.sampled_model_name is None:
            out.sampled_model_name = part.sampled_model_name
    out.sub_rewards = dict(rewards)
    out.scores = dict(rewards)
    values = dict(rewards)
    values.update({alias: rewards[name] for alias, name in grader.aliases.items()})
    try:
        out.reward = grader.calculate_output.evaluate(values)
    except ExpressionError:
        out.errors["formula_parse_error"] = True
        out.reward = 0.0
    return out
