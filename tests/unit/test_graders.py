"""openft.graders without a server: parsing and its refusals, templates, the formula
evaluator, each metric against its library, model graders through a fake caller, multi
graders, and the batch entry point the trainer uses."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openft.domain.errors import InvalidRequest
from openft.graders import (
    GradeResult,
    ModelCallError,
    Sample,
    grade,
    grade_batch,
    item_references,
    parse,
)
from openft.graders.expressions import ExpressionError, compile_expression
from openft.graders.result import FLAGS
from openft.graders.similarity import similarity
from openft.graders.templates import UnknownVariable, compile_template


def check(**overrides: Any) -> dict[str, Any]:
    return {
        "type": "string_check",
        "name": "check",
        "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}",
        "operation": "eq",
        **overrides,
    }


def grade_one(grader: dict[str, Any], text: str, item: dict[str, Any], **kw: Any) -> GradeResult:
    return asyncio.run(grade(parse(grader), Sample(text), item, **kw))


# -- templates -------------------------------------------------------------------------


def test_templates_read_nested_paths_and_indices() -> None:
    variables = {
        "item": {"a": {"b": [10, {"c": "deep"}]}, "spaced key": 3, "n": 1.5},
        "sample": {"output_text": "hi", "output_json": {"steps": [1, 2, 3]}},
    }
    cases = {
        "{{item.a.b[1].c}}": "deep",
        "{{ item.a.b.0 }}": "10",
        '{{item["spaced key"]}}': "3",
        "{{item.a.b}}": '[10, {"c": "deep"}]',
        "x={{item.n}}, y={{sample.output_text}}": "x=1.5, y=hi",
        "{{sample.output_json.steps[-1]}}": "3",
        "no variables {": "no variables {",
    }
    for source, expected in cases.items():
        assert compile_template(source, "p").render(variables) == expected, source


@pytest.mark.parametrize(
    "source",
    [
        "{{ answer }}",
        "{{ itme.x }}",
        "{{ sample.text }}",
        "{{ sample }}",
        "{{ item..x }}",
        "{{ item x }}",
        "{{ item.[0] }}",
    ],
)
def test_unreadable_template_variables_are_refused(source: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        compile_template(source, "grader.input")
    assert refused.value.param == "grader.input"


def test_a_missing_variable_raises_unknown_variable() -> None:
    template = compile_template("{{item.a[5]}}", "p")
    with pytest.raises(UnknownVariable) as missing:
        template.render({"item": {"a": [1]}, "sample": {}})
    assert missing.value.reference == "item.a[5]"


def test_item_references_lists_each_item_variable_once() -> None:
    grader = parse(
        {
            "type": "multi",
            "name": "m",
            "graders": {
                "a": check(),
                "b": check(input="{{item.meta.x}} {{item.answer}}", reference="{{item.l[0]}}"),
            },
            "calculate_output": "a + b",
        }
    )
    assert item_references(grader) == ["item.answer", "item.meta.x", "item.l[0]"]
    assert item_references(parse({"type": "python", "name": "p", "source": "grade = max"})) == []


# -- expressions -----------------------------------------------------------------------


def test_formulas_follow_arithmetic() -> None:
    names = frozenset({"a", "b"})
    values = {"a": 0.5, "b": 4.0}
    cases = {
        "a + b": 4.5,
        "2 ^ 3 ^ 2": 512.0,  # power binds from the right
        "a + b ^ 2 / 8": 2.5,  # and tighter than * and /
        "-a ** 2": -0.25,
        "min(a, b, 1) + max(a, b)": 4.5,
        "abs(a - b)": 3.5,
        "floor(a) + ceil(a)": 1.0,
        "sqrt(b) * exp(0) + log(1)": 2.0,
    }
    for source, expected in cases.items():
        assert compile_expression(source, names, "p").evaluate(values) == pytest.approx(expected)


@pytest.mark.parametrize(
    "source",
    [
        "__import__('os')",
        "a.real",
        "a if b else 1",
        "[a][0]",
        "'x'",
        "lambda: 1",
        "a < b",
        "True",
        "min(*[a])",
        "max(key=a)",
        "sqrt()",
        "abs(a, b)",
        "c",
        "a +",
        "",
    ],
)
def test_formulas_outside_the_allow_list_are_refused(source: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        compile_expression(source, frozenset({"a", "b"}), "grader.calculate_output")
    assert refused.value.param == "grader.calculate_output"


def test_a_deep_formula_is_refused_not_crashed() -> None:
    with pytest.raises(InvalidRequest):
        compile_expression("+".join(["a"] * 5000), frozenset({"a"}), "p")


@pytest.mark.parametrize("source", ["a / b", "log(b)", "sqrt(b - 1)", "exp(1000 * a)"])
def test_a_formula_without_a_finite_value_raises(source: str) -> None:
    with pytest.raises(ExpressionError):
        compile_expression(source, frozenset({"a", "b"}), "p").evaluate({"a": 1.0, "b": 0.0})


@given(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6))
def test_formulas_agree_with_python(x: float, y: float) -> None:
    expression = compile_expression("3 * x - y / 2 + max(x, y)", frozenset({"x", "y"}), "p")
    assert expression.evaluate({"x": x, "y": y}) == pytest.approx(3 * x - y / 2 + max(x, y))


# -- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grader", "param"),
    [
        ("not an object", "grader"),
        ({"name": "typeless"}, "grader.type"),
        ({"type": None}, "grader.type"),
        (check(name=""), "grader.name"),
        (check(operation="regex"), "grader.operation"),
        ({k: v for k, v in check().items() if k != "reference"}, "grader.reference"),
        (check(input=5), "grader.input"),
        (
            {
                "type": "text_similarity",
                "name": "t",
                "input": "a",
                "reference": "b",
                "evaluation_metric": "cosine",
            },
            "grader.evaluation_metric",
        ),
        (
            {
                "type": "text_similarity",
                "name": "t",
                "input": "a",
                "reference": "b",
                "evaluation_metric": "rouge_9",
            },
            "grader.evaluation_metric",
        ),
        ({"type": "python", "name": "p", "source": "def grade(s, i):\nreturn 1"}, "grader.source"),
        ({"type": "python", "name": "p", "source": "x = 1"}, "grader.source"),
        (
            {"type": "python", "name": "p", "source": "grade = 1", "image_tag": 3},
            "grader.image_tag",
        ),
        ({"type": "score_model", "name": "s", "model": "m", "input": []}, "grader.input"),
        (
            {
                "type": "score_model",
                "name": "s",
                "model": "m",
                "input": [{"role": "robot", "content": "x"}],
            },
            "grader.input[0].role",
        ),
        (
            {
                "type": "score_model",
                "name": "s",
                "model": "m",
                "input": [{"role": "user", "content": "x"}],
                "sampling_params": {"temperature": 3},
            },
            "grader.sampling_params.temperature",
        ),
        (
            {
                "type": "score_model",
                "name": "s",
                "model": "m",
                "input": [{"role": "user", "content": "x"}],
                "sampling_params": {"max_completions_tokens": 0},
            },
            "grader.sampling_params.max_completions_tokens",
        ),
        (
            {
                "type": "score_model",
                "name": "s",
                "model": "m",
                "input": [{"role": "user", "content": "x"}],
                "range": [0],
            },
            "grader.range",
        ),
        (
            {"type": "score_model", "name": "s", "input": [{"role": "user", "content": "x"}]},
            "grader.model",
        ),
        (
            {
                "type": "label_model",
                "name": "l",
                "model": "m",
                "labels": ["a", "a"],
                "passing_labels": ["a"],
                "input": [{"role": "user", "content": "x"}],
            },
            "grader.labels",
        ),
        ({"type": "multi", "name": "m", "graders": {}, "calculate_output": "1"}, "grader.graders"),
        (
            {"type": "multi", "name": "m", "graders": {"not ok": check()}, "calculate_output": "1"},
            "grader.graders.not ok",
        ),
        (
            {"type": "multi", "name": "m", "graders": [check(), check()], "calculate_output": "1"},
            "grader.graders[1].name",
        ),
        (
            {
                "type": "multi",
                "name": "m",
                "graders": {
                    "a": {
                        "type": "multi",
                        "name": "n",
                        "graders": {"b": check()},
                        "calculate_output": "b",
                    }
                },
                "calculate_output": "a",
            },
            "grader.graders.a.type",
        ),
        (
            {
                "type": "multi",
                "name": "m",
                "graders": {"a": check(operation="x")},
                "calculate_output": "a",
            },
            "grader.graders.a.operation",
        ),
        (
            {
                "type": "multi",
                "name": "m",
                "graders": [check(), check(name="c2", input="{{x}}")],
                "calculate_output": "check",
            },
            "grader.graders[1].input",
        ),
    ],
)
def test_parse_refuses_with_the_field_at_fault(grader: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse(grader)
    assert refused.value.param == param
    assert refused.value.status_code == 400


def test_python_source_limit_is_openais_256_kib() -> None:
    body = "def grade(s, i):\n    return 1\n"
    parse({"type": "python", "name": "p", "source": body + "#" * (256 * 1024 - len(body))})
    with pytest.raises(InvalidRequest, match="256 KiB"):
        parse({"type": "python", "name": "p", "source": body + "#" * (256 * 1024)})


def test_a_grader_without_a_name_is_named_by_its_type() -> None:
    grader = {k: v for k, v in check().items() if k != "name"}
    assert parse(grader).name == "string_check"


# -- grading ---------------------------------------------------------------------------


def test_every_result_has_every_flag() -> None:
    result = grade_one(check(), "4", {"answer": "4"})
    assert result.reward == 1.0 and set(result.errors) == set(FLAGS) and not result.failed
    missing = grade_one(check(), "4", {})
    assert missing.reward == 0 and missing.errors["invalid_variable_error"]
    assert [flag for flag, raised in missing.errors.items() if raised] == ["invalid_variable_error"]


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        (
            "fuzzy_match",
            lambda t, r: (
                __import__("rapidfuzz").fuzz.WRatio(
                    t, r, processor=__import__("rapidfuzz").utils.default_process
                )
                / 100
            ),
        ),
        (
            "rouge_2",
            lambda t, r: (
                __import__("rouge_score.rouge_scorer")
                .rouge_scorer.RougeScorer(["rouge2"])
                .score(r, t)["rouge2"]
                .fmeasure
            ),
        ),
        (
            "rouge_l",
            lambda t, r: (
                __import__("rouge_score.rouge_scorer")
                .rouge_scorer.RougeScorer(["rougeL"])
                .score(r, t)["rougeL"]
                .fmeasure
            ),
        ),
    ],
)
def test_similarity_is_the_librarys_value(metric: str, expected: Any) -> None:
    text, reference = "fuzzy wuzzy was a bear", "Fuzzy Wuzzy had no hair"
    assert similarity(metric, text, reference) == pytest.approx(expected(text, reference))


def test_similarity_of_identical_and_disjoint_texts() -> None:
    same = "the cat sat on the mat"
    for metric in ("fuzzy_match", "bleu", "gleu", "rouge_1", "rouge_5", "rouge_l"):
        assert similarity(metric, same, same) == pytest.approx(1.0), metric
        if metric != "fuzzy_match":  # characters in common still count there
            assert similarity(metric, "alpha beta gamma delta", same) == 0.0, metric
    assert similarity("meteor", same, same) > 0.99
    # meteor knows synonyms from WordNet: "hound" for "dog".
    assert similarity("meteor", "the hound ran", "the dog ran") > similarity(
        "meteor", "the cat ran", "the dog ran"
    )
    assert similarity("bleu", "", same) == 0.0


class FakeModels:
    def __init__(self, reply: str | Exception) -> None:
        self.reply = reply
        self.calls: list[tuple[str, list[dict[str, Any]], dict[str, Any], Any]] = []

    async def __call__(
        self, model: str, messages: list[dict[str, Any]], sampling: dict[str, Any], fmt: Any
    ) -> tuple[str, dict[str, Any]]:
        self.calls.append((model, messages, sampling, fmt))
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply, {"prompt_tokens": 10, "completion_tokens": 3}


SCORE = {
    "type": "score_model",
    "name": "judge",
    "model": "judge-model",
    "input": [
        {"role": "developer", "content": "Score from 0 to 10."},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "A: {{sample.output_text}}"},
                {"type": "input_text", "text": " R: {{item.ref}}"},
            ],
        },
    ],
    "range": [0, 10],
    "sampling_params": {"temperature": 0.5, "seed": 3, "max_completions_tokens": 20},
}


@pytest.mark.parametrize(
    ("reply", "reward"),
    [("7", 7.0), (" 7.5\n", 7.5), ('{"result": 3}', 3.0), ('```json\n{"score": 10}\n```', 10.0)],
)
def test_score_model_reads_the_score(reply: str, reward: float) -> None:
    models = FakeModels(reply)
    result = grade_one(SCORE, "yes", {"ref": "no"}, models=models)
    assert result.reward == reward and not result.failed
    model, messages, sampling, fmt = models.calls[0]
    assert model == "judge-model"
    assert messages == [
        {"role": "developer", "content": "Score from 0 to 10."},
        {"role": "user", "content": "A: yes R: no"},
    ]
    assert sampling == {"temperature": 0.5, "seed": 3, "max_completions_tokens": 20}
    assert fmt["json_schema"]["schema"]["properties"]["result"]["maximum"] == 10
    assert result.token_usage == {
        "prompt_tokens": 10,
        "completion_tokens": 3,
        "total_tokens": 13,
        "cached_tokens": 0,
    }
    assert result.sampled_model_name == "judge-model"


@pytest.mark.parametrize("reply", ["seven", "11", "-1", '{"other": 1}', "nan", ""])
def test_an_unreadable_or_out_of_range_score_is_a_parse_error(reply: str) -> None:
    result = grade_one(SCORE, "yes", {"ref": "no"}, models=FakeModels(reply))
    assert result.reward == 0 and result.errors["model_grader_parse_error"]
    assert result.token_usage is not None  # the model was called: its tokens count


def test_model_grader_failures() -> None:
    down = grade_one(SCORE, "yes", {"ref": "no"}, models=FakeModels(ModelCallError("gone")))
    assert down.errors["model_grader_server_error"]
    assert down.details["model_grader_server_error_details"] == "gone"
    missing = grade_one(SCORE, "yes", {}, models=FakeModels("1"))
    assert missing.errors["invalid_variable_error"]
    no_caller = grade_one(SCORE, "yes", {"ref": "no"})
    assert no_caller.errors["model_grader_server_error"]


def test_label_model_passes_on_passing_labels() -> None:
    grader = {
        "type": "label_model",
        "name": "sentiment",
        "model": "m",
        "input": [{"role": "user", "content": "Statement: {{item.text}}"}],
        "labels": ["positive", "neutral", "negative"],
        "passing_labels": ["positive", "neutral"],
    }
    for reply, reward in [("positive", 1.0), ('{"result": "neutral"}', 1.0), ("Negative.", 0.0)]:
        result = grade_one(grader, "", {"text": "fine"}, models=FakeModels(reply))
        assert result.reward == reward and not result.failed, reply
    assert grade_one(grader, "", {"text": "x"}, models=FakeModels("happy")).errors[
        "model_grader_parse_error"
    ]


def test_multi_combines_flags_usage_and_rewards() -> None:
    grader = {
        "type": "multi",
        "name": "both",
        "graders": {
            "exact": check(),
            "judge": {**SCORE, "range": [0, 1]},
        },
        "calculate_output": "0.25 * exact + 0.75 * judge",
    }
    result = grade_one(grader, "4", {"answer": "4", "ref": "4"}, models=FakeModels("0.5"))
    assert result.reward == pytest.approx(0.625)
    assert result.sub_rewards == {"exact": 1.0, "judge": 0.5} == result.scores
    assert result.usage_per_model["judge-model"]["total_tokens"] == 13
    broken = grade_one(grader, "4", {"answer": "4", "ref": "4"}, models=FakeModels("x"))
    assert broken.errors["model_grader_parse_error"] and broken.reward == 0.25


def test_grade_batch_grades_each_sample_against_its_item() -> None:
    grader = parse(
        {
            "type": "multi",
            "name": "m",
            "graders": [
                check(),
                {
                    "type": "python",
                    "name": "py",
                    "source": "def grade(s, i):\n    return len(s['output_text']) / 10\n",
                },
            ],
            "calculate_output": "string_check_score + py",
        }
    )
    samples = [Sample(str(n)) for n in range(6)]
    items = [{"answer": str(n if n % 2 else -1)} for n in range(6)]
    results = grade_batch(grader, samples, items)
    assert [r.reward for r in results] == [0.1, 1.1, 0.1, 1.1, 0.1, 1.1]
    assert all(math.isfinite(r.execution_time) for r in results)
    with pytest.raises(ValueError):
        grade_batch(grader, samples, items[:2])


def test_a_path_into_a_sample_that_is_not_json_is_a_sample_parse_error() -> None:
    grader = check(input="{{sample.output_json.answer}}", reference="4")
    assert asyncio.run(grade(parse(grader), Sample("4", {"answer": "4"}), {})).reward == 1
    not_json = asyncio.run(grade(parse(grader), Sample("four"), {}))
    assert [flag for flag, raised in not_json.errors.items() if raised] == ["sample_parse_error"]
    no_field = asyncio.run(grade(parse(grader), Sample("{}", {}), {}))
    assert no_field.errors["invalid_variable_error"]


def test_grade_batch_works_from_a_thread_running_an_event_loop() -> None:
    async def inside_a_loop() -> list[GradeResult]:
        return grade_batch(parse(check()), [Sample("a")], [{"answer": "a"}])

    assert [r.reward for r in asyncio.run(inside_a_loop())] == [1.0]
