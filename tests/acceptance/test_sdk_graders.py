"""OpenAI's graders endpoints through the official SDK against a real server: every
grader type, each text_similarity metric against its library's own value, python
graders in their sandbox (a loop stopped at the limit, no network, nothing writable but
its temporary directory, no view of the server's data), model graders scored by the
server's own tiny model, and `validate` refusing bad graders with the field at fault."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from openft.testing.server import Server, openft_command, running_server
from tests.conftest import _fresh_database

# The loop test waits this long: far below the default (120 s), so that a reply proves
# the configured limit stopped it.
TIMEOUT_SECONDS = 3


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_model: Path
) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("graders")
    for url in _fresh_database("sqlite", data_dir, request):
        with running_server(
            url,
            data_dir,
            f"tiny={tiny_model}",
            env={"OPENFT_GRADER_PYTHON_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS)},
        ) as running:
            yield running


@pytest.fixture(scope="module")
def client(server: Server) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0, timeout=120)


def run(client: OpenAI, grader: dict[str, Any], sample: str, item: Any = None) -> dict[str, Any]:
    """The raw answer (the SDK's parsed object drops nothing, but a dict reads plainly)."""
    kwargs: dict[str, Any] = {"grader": grader, "model_sample": sample}
    if item is not None:
        kwargs["item"] = item
    response = client.fine_tuning.alpha.graders.with_raw_response.run(**kwargs)
    parsed = response.parse()  # the SDK's own model accepts the answer
    body: dict[str, Any] = response.http_response.json()
    assert parsed.reward == body["reward"]
    return body


def flags(body: dict[str, Any]) -> set[str]:
    return {name for name, value in body["metadata"]["errors"].items() if value is True}


ALL_FLAGS = {
    "formula_parse_error",
    "sample_parse_error",
    "truncated_observation_error",
    "unresponsive_reward_error",
    "invalid_variable_error",
    "other_error",
    "python_grader_server_error",
    "python_grader_server_error_type",
    "python_grader_runtime_error",
    "python_grader_runtime_error_details",
    "model_grader_server_error",
    "model_grader_refusal_error",
    "model_grader_parse_error",
    "model_grader_server_error_details",
}


def test_string_check_operations(client: OpenAI) -> None:
    cases = [
        ("eq", "Paris", "Paris", 1.0),
        ("eq", "paris", "Paris", 0.0),
        ("ne", "Lyon", "Paris", 1.0),
        ("like", "It is Paris.", "Paris", 1.0),
        ("like", "It is paris.", "Paris", 0.0),
        ("ilike", "It is PARIS.", "Paris", 1.0),
    ]
    for operation, sample, answer, expected in cases:
        grader = {
            "type": "string_check",
            "name": "capital",
            "input": "{{ sample.output_text }}",
            "reference": "{{ item.answer }}",
            "operation": operation,
        }
        body = run(client, grader, sample, {"answer": answer})
        assert body["reward"] == expected, (operation, sample)
        meta = body["metadata"]
        assert meta["name"] == "capital" and meta["type"] == "string_check"
        assert set(meta["errors"]) == ALL_FLAGS and not flags(body)
        assert meta["token_usage"] is None and meta["sampled_model_name"] is None
        assert body["sub_rewards"] == {} and body["model_grader_token_usage_per_model"] == {}


def _library_value(metric: str, text: str, reference: str) -> float:
    """Each metric straight from its library, as docs/graders.md says it is computed."""
    if metric == "fuzzy_match":
        from rapidfuzz import fuzz, utils

        return fuzz.WRatio(text, reference, processor=utils.default_process) / 100
    if metric.startswith("rouge_"):
        from rouge_score import rouge_scorer

        key = "rougeL" if metric == "rouge_l" else "rouge" + metric[-1]
        return float(rouge_scorer.RougeScorer([key]).score(reference, text)[key].fmeasure)
    from nltk.tokenize import wordpunct_tokenize

    hyp, ref = wordpunct_tokenize(text), wordpunct_tokenize(reference)
    if metric == "bleu":
        from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

        return float(sentence_bleu([ref], hyp, smoothing_function=SmoothingFunction().method1))
    if metric == "gleu":
        from nltk.translate.gleu_score import sentence_gleu

        return float(sentence_gleu([ref], hyp))
    assert metric == "meteor"
    from nltk.translate.meteor_score import meteor_score

    from openft.graders.similarity import wordnet

    return float(meteor_score([ref], hyp, wordnet=wordnet()))


@pytest.mark.parametrize(
    "metric",
    [
        "fuzzy_match",
        "bleu",
        "gleu",
        "meteor",
        "rouge_1",
        "rouge_2",
        "rouge_3",
        "rouge_4",
        "rouge_5",
        "rouge_l",
    ],
)
def test_text_similarity_equals_the_library(client: OpenAI, metric: str) -> None:
    text = "The quick brown fox jumped over the lazy dog by the river bank today."
    reference = "A quick brown fox jumps over the lazy dog by the river bank."
    grader = {
        "type": "text_similarity",
        "name": metric,
        "input": "{{sample.output_text}}",
        "reference": "{{item.reference}}",
        "evaluation_metric": metric,
    }
    body = run(client, grader, text, {"reference": reference})
    assert not flags(body)
    expected = _library_value(metric, text, reference)
    assert 0 < expected < 1
    assert body["reward"] == pytest.approx(expected, abs=1e-12)


def test_python_grader_reads_sample_and_item(client: OpenAI) -> None:
    source = (
        "import json\n"
        "from rapidfuzz import fuzz\n"
        "def grade(sample, item):\n"
        "    answer = sample['output_json']['answer']\n"
        "    return 1.0 if answer == item['expected'][0] else 0.25\n"
    )
    grader = {"type": "python", "name": "json answer", "source": source}
    assert run(client, grader, '{"answer": 42}', {"expected": [42]})["reward"] == 1.0
    assert run(client, grader, '{"answer": 41}', {"expected": [42]})["reward"] == 0.25
    body = run(client, grader, "not json", {"expected": [42]})  # output_json is None
    assert body["reward"] == 0 and "python_grader_runtime_error" in flags(body)
    assert "TypeError" in body["metadata"]["errors"]["python_grader_runtime_error_details"]


HOSTILE = {
    "loop": "def grade(sample, item):\n    while True:\n        pass\n",
    "socket": (
        "import socket\n"
        "def grade(sample, item):\n"
        "    socket.create_connection((item['host'], item['port']), timeout=5)\n"
        "    return 1.0\n"
    ),
    "write": "def grade(sample, item):\n    open(item['path'], 'w').write('x')\n    return 1.0\n",
    "text": "def grade(sample, item):\n    return 'high'\n",
    "raise": "def grade(sample, item):\n    raise ValueError('no grade for you')\n",
}


def test_hostile_python_graders_score_zero_and_the_server_is_unharmed(
    client: OpenAI, server: Server
) -> None:
    def hostile(name: str, item: Any = None) -> dict[str, Any]:
        body = run(client, {"type": "python", "name": name, "source": HOSTILE[name]}, "x", item)
        assert body["reward"] == 0, name
        assert "python_grader_runtime_error" in flags(body), name
        details = body["metadata"]["errors"]["python_grader_runtime_error_details"]
        assert isinstance(details, str)
        return body

    looped = hostile("loop")
    assert "unresponsive_reward_error" in flags(looped)
    assert (
        f"{TIMEOUT_SECONDS} s limit"
        in looped["metadata"]["errors"]["python_grader_runtime_error_details"]
    )
    assert looped["metadata"]["execution_time"] < 60  # the configured limit, not 120 s
    # The server listens on the host's loopback; the sandbox has a loopback of its own.
    port = httpx.URL(server.base_url).port
    refused = hostile("socket", {"host": "127.0.0.1", "port": port})["metadata"]["errors"]
    assert "ConnectionRefusedError" in refused["python_grader_runtime_error_details"]
    outside = hostile("socket", {"host": "192.0.2.1", "port": 80})["metadata"]["errors"]
    assert "Network is unreachable" in outside["python_grader_runtime_error_details"]
    # Outside its temporary directory nothing is writable, the server's data least of all.
    target = server.data_dir / "planted.txt"
    written = hostile("write", {"path": str(target)})
    assert "python_grader_runtime_error" in flags(written)
    assert not target.exists()
    assert (
        "not a number"
        in hostile("text")["metadata"]["errors"]["python_grader_runtime_error_details"]
    )
    assert (
        "no grade for you"
        in hostile("raise")["metadata"]["errors"]["python_grader_runtime_error_details"]
    )
    # Its temporary directory is writable; the server's data directory is not there at all.
    peek = (
        "import os\n"
        "def grade(sample, item):\n"
        "    open('/tmp/scratch', 'w').write('ok')\n"
        "    seen = os.path.exists(item['data_dir']) or os.path.exists(item['db'])\n"
        "    return 0.0 if seen else 0.5 + len(os.environ) / 1000\n"
    )
    body = run(
        client,
        {"type": "python", "name": "peek", "source": peek},
        "x",
        {"data_dir": str(server.data_dir), "db": str(server.data_dir / "openft.db")},
    )
    assert not flags(body)
    assert 0.5 <= body["reward"] < 0.51  # unseen, and an environment of a few variables
    # The server still answers, graders and everything else.
    grader = {
        "type": "string_check",
        "name": "after",
        "input": "{{sample.output_text}}",
        "reference": "ok",
        "operation": "eq",
    }
    assert run(client, grader, "ok")["reward"] == 1.0
    assert httpx.get(f"{server.root_url}/healthz").status_code == 200
    assert [m.id for m in client.models.list()] == ["tiny"]


def test_an_unknown_variable_is_invalid_variable_error(client: OpenAI) -> None:
    grader = {
        "type": "string_check",
        "name": "missing",
        "input": "{{sample.output_text}}",
        "reference": "{{item.meta.tags[3]}}",
        "operation": "eq",
    }
    body = run(client, grader, "a", {"meta": {"tags": ["a"]}})
    assert body["reward"] == 0 and flags(body) == {"invalid_variable_error"}
    assert run(client, grader, "d", {"meta": {"tags": ["a", "b", "c", "d"]}})["reward"] == 1


def test_score_model_scored_by_the_servers_own_model(client: OpenAI) -> None:
    grader = {
        "type": "score_model",
        "name": "judge",
        "model": "tiny",
        "input": [
            {"role": "system", "content": "Answer with a number from 0 to 1."},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Reference: {{item.answer}}"},
                    {"type": "input_text", "text": " Answer: {{sample.output_text}}"},
                ],
            },
        ],
        "sampling_params": {"temperature": 0, "max_completions_tokens": 4, "seed": 7},
        "range": [0, 1],
    }
    body = run(client, grader, "Paris", {"answer": "Paris"})
    meta = body["metadata"]
    assert meta["sampled_model_name"] == "tiny"
    assert isinstance(meta["token_usage"], int) and meta["token_usage"] > 0
    usage = body["model_grader_token_usage_per_model"]["tiny"]
    assert usage["completion_tokens"] >= 1
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # A random tiny model rarely writes a number: either it did, in range, or the grade
    # says it could not read one. Nothing else.
    if flags(body):
        assert flags(body) == {"model_grader_parse_error"} and body["reward"] == 0
    else:
        assert 0 <= body["reward"] <= 1


def test_multi_grader_map_and_list_forms(client: OpenAI) -> None:
    exact = {
        "type": "string_check",
        "name": "exact",
        "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}",
        "operation": "eq",
    }
    close = {
        "type": "text_similarity",
        "name": "close",
        "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}",
        "evaluation_metric": "fuzzy_match",
    }
    length = {
        "type": "python",
        "name": "length",
        "source": "def grade(sample, item):\n    return len(sample['output_text'])\n",
    }
    label = {
        "type": "label_model",
        "name": "label",
        "model": "tiny",
        "input": [{"role": "user", "content": "Is {{sample.output_text}} right?"}],
        "labels": ["yes", "no"],
        "passing_labels": ["yes"],
        "sampling_params": {"max_completions_tokens": 2, "temperature": 0},
    }
    item = {"answer": "Paris"}
    mapped = {
        "type": "multi",
        "name": "combined",
        "graders": {"exact": exact, "close": close, "length": length, "label": label},
        "calculate_output": "0.5 * exact + 0.5 * close + min(length, 2) ^ 2 / 100 + 0 * label",
    }
    body = run(client, mapped, "Paris", item)
    assert body["sub_rewards"]["exact"] == 1.0
    assert body["sub_rewards"]["close"] == 1.0
    assert body["sub_rewards"]["length"] == 5.0
    assert body["sub_rewards"]["label"] in (0.0, 1.0)
    assert body["reward"] == pytest.approx(1.04)
    assert body["metadata"]["type"] == "multi" and body["metadata"]["name"] == "combined"
    assert body["metadata"]["sampled_model_name"] == "tiny"
    # The list form (OpenAI's spec): graders called by name, or `<type>_score`.
    listed = {
        "type": "multi",
        "name": "listed",
        "graders": [exact, close],
        "calculate_output": "0.5 * text_similarity_score + 0.5 * exact",
    }
    body = run(client, listed, "Pariss", item)
    assert set(body["sub_rewards"]) == {"exact", "close"}
    assert body["reward"] == pytest.approx(0.5 * body["sub_rewards"]["close"])
    # A formula that cannot be computed for these rewards.
    broken = {**listed, "calculate_output": "log(exact)"}
    body = run(client, broken, "Lyon", item)
    assert body["reward"] == 0 and "formula_parse_error" in flags(body)


def test_validate_echoes_a_good_grader(client: OpenAI) -> None:
    grader = {
        "type": "string_check",
        "name": "Example string check grader",
        "input": "{{sample.output_text}}",
        "reference": "{{item.label}}",
        "operation": "eq",
    }
    answer = client.fine_tuning.alpha.graders.validate(grader=grader)  # type: ignore[arg-type]
    assert answer.grader is not None and answer.grader.model_dump() == grader


GOOD_CHECK = {
    "type": "string_check",
    "name": "check",
    "input": "{{sample.output_text}}",
    "reference": "x",
    "operation": "eq",
}
BAD_GRADERS = [
    ({**GOOD_CHECK, "operation": "contains"}, "grader.operation"),
    ({**GOOD_CHECK, "input": "{{ answer }}"}, "grader.input"),
    ({**GOOD_CHECK, "reference": "{{ sample.text }}"}, "grader.reference"),
    ({**GOOD_CHECK, "type": "regex"}, "grader.type"),
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
    ({"type": "python", "name": "p", "source": "def grade(:"}, "grader.source"),
    ({"type": "python", "name": "p", "source": "def judge(s, i): return 1"}, "grader.source"),
    (
        {"type": "python", "name": "p", "source": "def grade(s, i): return 1\n" + "#" * 262144},
        "grader.source",
    ),
    (
        {
            "type": "score_model",
            "name": "s",
            "model": "no-such-model",
            "input": [{"role": "user", "content": "{{sample.output_text}}"}],
        },
        "grader.model",
    ),
    (
        {
            "type": "score_model",
            "name": "s",
            "model": "tiny",
            "range": [1, 0],
            "input": [{"role": "user", "content": "x"}],
        },
        "grader.range",
    ),
    (
        {
            "type": "score_model",
            "name": "s",
            "model": "tiny",
            "input": [
                {
                    "role": "user",
                    "content": [{"type": "input_image", "image_url": "https://example.com/a.png"}],
                }
            ],
        },
        "grader.input[0].content[0].type",
    ),
    (
        {
            "type": "multi",
            "name": "m",
            "graders": {"a": GOOD_CHECK},
            "calculate_output": "a + __import__('os').getpid()",
        },
        "grader.calculate_output",
    ),
    (
        {"type": "multi", "name": "m", "graders": {"a": GOOD_CHECK}, "calculate_output": "b"},
        "grader.calculate_output",
    ),
    (
        {
            "type": "multi",
            "name": "m",
            "graders": {
                "a": {**GOOD_CHECK, "reference": "{{ item }"},
                "b": {**GOOD_CHECK, "reference": "{{ itme.x }}"},
            },
            "calculate_output": "a",
        },
        "grader.graders.b.reference",
    ),
    (
        {
            "type": "label_model",
            "name": "l",
            "model": "tiny",
            "labels": ["a"],
            "passing_labels": ["b"],
            "input": [{"role": "user", "content": "x"}],
        },
        "grader.passing_labels",
    ),
]


@pytest.mark.parametrize(("grader", "param"), BAD_GRADERS)
def test_validate_refuses_bad_graders_naming_the_field(
    client: OpenAI, grader: dict[str, Any], param: str
) -> None:
    for call in (
        lambda: client.fine_tuning.alpha.graders.validate(grader=grader),  # type: ignore[arg-type]
        lambda: client.fine_tuning.alpha.graders.run(grader=grader, model_sample="x"),  # type: ignore[arg-type]
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            call()
        error = refused.value.body
        assert isinstance(error, dict)
        assert error["param"] == param, error
        assert error["type"] == "invalid_request_error" and error["message"]


def test_graders_need_a_project_key(server: Server) -> None:
    response = httpx.post(
        f"{server.base_url}/fine_tuning/alpha/graders/validate", json={"grader": GOOD_CHECK}
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_api_key"


def test_the_cli_runs_and_validates_graders(server: Server, tmp_path: Path) -> None:
    env = {"OPENFT_BASE_URL": server.base_url, "OPENFT_API_KEY": server.key}
    grader = tmp_path / "grader.json"
    item = tmp_path / "item.json"
    grader.write_text(json.dumps(GOOD_CHECK | {"reference": "{{item.answer}}"}))
    item.write_text(json.dumps({"answer": "yes"}))
    ran = openft_command(
        "graders", "run", str(grader), "--sample", "yes", "--item", str(item), env=env
    )
    assert ran.splitlines() == ["reward\t1.0"]
    missing = openft_command("graders", "run", str(grader), "--sample", "yes", env=env)
    assert missing.splitlines() == ["reward\t0.0", "errors\tinvalid_variable_error"]
    assert openft_command("graders", "validate", str(grader), env=env) == "valid"
    grader.write_text(json.dumps(GOOD_CHECK | {"operation": "regex"}))
    with pytest.raises(RuntimeError, match=r"grader\.operation"):
        openft_command("graders", "validate", str(grader), env=env)
