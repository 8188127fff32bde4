"""The reinforcement method: parsing, "auto" resolution, the rules its files follow, its
metrics events' texts and results file, and how its checkpoints are pruned."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from openft.domain import messages
from openft.domain.entities import Method, MethodType
from openft.domain.errors import InvalidFile, InvalidRequest
from openft.domain.hyperparameters import generations, resolve
from openft.domain.methods import resolve_method
from openft.domain.validation import FileValidator, MethodRules
from openft.services.jobs import check_grader, method_rules
from openft.services.worker import step_metrics_csv

GRADER = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}


def rft(**section: Any) -> Method:
    return resolve_method(None, {"type": "reinforcement", "reinforcement": section})


def test_a_reinforcement_method_defaults_to_auto_and_echoes_its_grader() -> None:
    method = rft(grader=GRADER)
    hyper = method.hyperparameters
    assert method.type is MethodType.REINFORCEMENT and method.grader == GRADER
    assert (hyper.compute_multiplier, hyper.eval_interval, hyper.eval_samples) == ("auto",) * 3
    assert hyper.reasoning_effort == "default" and hyper.beta is None
    shown = method.to_dict()
    assert shown["type"] == "reinforcement"
    assert shown["reinforcement"]["grader"] == GRADER
    assert "response_format" not in shown["reinforcement"]
    assert {"compute_multiplier", "eval_interval", "eval_samples", "reasoning_effort"} <= set(
        shown["reinforcement"]["hyperparameters"]
    )
    # What the store keeps and the worker reads back is the same method.
    assert Method.from_dict(json.loads(json.dumps(shown))) == method


def test_older_stored_methods_still_read() -> None:
    stored = {"type": "supervised", "hyperparameters": {"n_epochs": 2, "batch_size": "auto"}}
    method = Method.from_dict(stored)
    assert method.type is MethodType.SUPERVISED and method.hyperparameters.n_epochs == 2


def test_rft_hyperparameters_resolve_on_claim() -> None:
    method = rft(grader=GRADER, hyperparameters={"batch_size": 4, "compute_multiplier": 2.0})
    resolved = resolve(method.hyperparameters, MethodType.REINFORCEMENT, examples=10)
    assert resolved.batch_size == 4 and resolved.compute_multiplier == 2.0
    assert resolved.eval_interval == 3  # one epoch: 10 examples in batches of 4
    assert resolved.eval_samples == 1 and resolved.n_epochs == 10  # 100 examples seen
    chosen = rft(grader=GRADER, hyperparameters={"eval_interval": 7, "eval_samples": 3})
    kept = resolve(chosen.hyperparameters, MethodType.REINFORCEMENT, examples=10)
    assert (kept.eval_interval, kept.eval_samples, kept.compute_multiplier) == (7, 3, 1.0)
    # The other methods have none of RFT's hyperparameters.
    sft = resolve(resolve_method(None, None).hyperparameters, MethodType.SUPERVISED, 10)
    assert sft.compute_multiplier is None and "eval_interval" not in sft.to_dict()


@pytest.mark.parametrize(
    ("multiplier", "group"), [(1.0, 4), (0.1, 2), (0.5, 2), (2.0, 8), (10.0, 40)]
)
def test_compute_multiplier_sets_the_completions_per_prompt(multiplier: float, group: int) -> None:
    assert generations(multiplier) == group


@pytest.mark.parametrize(
    ("section", "param"),
    [
        ({}, "method.reinforcement.grader"),
        ({"grader": "exact"}, "method.reinforcement.grader"),
        (
            {"grader": GRADER, "hyperparameters": {"reasoning_effort": "extreme"}},
            "method.reinforcement.hyperparameters.reasoning_effort",
        ),
        (
            {"grader": GRADER, "response_format": {"type": "text"}},
            "method.reinforcement.response_format.type",
        ),
        (
            {"grader": GRADER, "response_format": {"type": "json_schema", "json_schema": 3}},
            "method.reinforcement.response_format.json_schema",
        ),
    ],
)
def test_bad_reinforcement_sections_are_refused(section: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        rft(**section)
    assert raised.value.param == param


def test_rft_hyperparameters_belong_to_rft() -> None:
    with pytest.raises(InvalidRequest, match="compute_multiplier is a reinforcement"):
        resolve_method(
            None,
            {"type": "supervised", "supervised": {"hyperparameters": {"compute_multiplier": 2}}},
        )


def test_graders_are_checked_by_the_graders_package_and_their_models_named() -> None:
    assert check_grader(rft(grader=GRADER)) == []
    with pytest.raises(InvalidRequest) as raised:
        check_grader(rft(grader={**GRADER, "operation": "is"}))
    assert raised.value.param == "method.reinforcement.grader.operation"
    judge = {
        "type": "score_model",
        "name": "judge",
        "model": "tiny",
        "input": [{"role": "user", "content": "{{sample.output_text}}"}],
    }
    multi = {"type": "multi", "name": "m", "graders": {"j": judge}, "calculate_output": "j"}
    # Model graders are allowed; the job service checks the project may call each model.
    assert check_grader(rft(grader=multi)) == [
        ("tiny", "method.reinforcement.grader.graders.j.model")
    ]


def validate(data: list[dict[str, Any]], rules: MethodRules | None) -> int:
    validator = FileValidator("train.jsonl", None, rules)
    validator.feed("\n".join(json.dumps(row) for row in data).encode())
    return validator.finish().examples


PROMPT = {"messages": [{"role": "user", "content": "2+2?"}], "answer": "4", "meta": {"tags": ["a"]}}


def test_prompt_only_rows_are_a_chat_file_until_a_method_uses_them() -> None:
    assert validate([PROMPT, PROMPT], None) == 2  # an upload: the format alone
    sft = MethodRules(MethodType.SUPERVISED)
    with pytest.raises(InvalidFile, match="line 1: messages has no assistant message"):
        validate([PROMPT], sft)


def test_a_grader_s_item_references_must_be_in_every_row() -> None:
    rules = method_rules(rft(grader=GRADER))
    assert rules == MethodRules(MethodType.REINFORCEMENT, ["item.answer"])
    assert validate([PROMPT, PROMPT], rules) == 2
    lacking = {"messages": PROMPT["messages"], "solution": "4"}
    with pytest.raises(InvalidFile) as raised:
        validate([PROMPT, PROMPT, lacking], rules)
    assert raised.value.message == (
        "Invalid file train.jsonl, line 3: the grader reads {{item.answer}} but the row has "
        "no 'answer'."
    )
    nested = MethodRules(MethodType.REINFORCEMENT, ["item.meta.tags[0]", "item.meta.tags[1]"])
    with pytest.raises(InvalidFile, match=r"line 1: .*\{\{item.meta.tags\[1\]\}\}"):
        validate([PROMPT], nested)
    answered = {"messages": [*PROMPT["messages"], {"role": "assistant", "content": "4"}]}
    with pytest.raises(InvalidFile, match="line 1: the last message must be a user message"):
        validate([{**answered, "answer": "4"}], rules)


def test_reward_metrics_read_as_openai_words_them() -> None:
    train = messages.step_metrics({"step": 3, "total_steps": 40, "train_mean_reward": 0.25})
    assert train.message == "Step 3/40, train mean reward=0.25"
    evaluated = messages.step_metrics(
        {"step": 10, "total_steps": 40, "train_mean_reward": 0.5, "full_valid_mean_reward": 0.375}
    )
    assert (
        evaluated.message == "Step 10/40, train mean reward=0.50, full validation mean reward=0.38"
    )
    assert evaluated.data["full_valid_mean_reward"] == 0.375


def test_an_rft_results_file_has_the_reward_columns() -> None:
    rows: list[dict[str, object]] = [
        {"step": 1, "train_mean_reward": 0.25, "completion_tokens_mean": 16.0, "train_loss": 0.0},
        {"step": 2, "train_mean_reward": 0.5, "full_valid_mean_reward": 0.75},
    ]
    table = list(csv.DictReader(io.StringIO(step_metrics_csv(rows).decode())))
    assert list(table[0]) == [
        "step",
        "train_mean_reward",
        "full_valid_mean_reward",
        "completion_tokens_mean",
        "train_loss",
    ]
    assert [r["full_valid_mean_reward"] for r in table] == ["", "0.75"]
    sft = step_metrics_csv([{"step": 1, "train_loss": 1.0}]).decode().splitlines()[0]
    assert sft.startswith("step,train_loss,")


def test_prompt_rows_of_any_message_shape_make_one_dataset(tmp_path: Path) -> None:
    from datasets import Dataset

    from openft.training.data import ITEM_COLUMN, prompt_dataset

    rows = [
        {"messages": [{"role": "user", "content": "hi"}], "answer": "1"},
        {
            "messages": [
                {"role": "system", "content": "terse", "name": "rules"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "two "},
                        {"type": "text", "text": "parts"},
                    ],
                },
            ],
            "answer": {"nested": [1, 2]},
        },
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows))
    dataset = Dataset.from_list(prompt_dataset(path, "training file"))
    assert dataset[1]["prompt"] == [
        {"role": "system", "content": "terse"},
        {"role": "user", "content": "two parts"},
    ]
    assert json.loads(dataset[1][ITEM_COLUMN]) == {"answer": {"nested": [1, 2]}}
