"""Chat completions on what was trained, through the official SDK against a real server:
two jobs teach a tiny model two patterns ("repeat X" answers "X X X", and "X X"); their
models, their checkpoints and the base answer, streamed and not, and deleting works."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai import OpenAI

from openft import sse_lines
from openft.testing.data import REPEAT_WORDS, repeat_example, repeat_file
from openft.testing.server import Server, openft_command, running_server, wait_until
from tests.conftest import BACKENDS, _fresh_database
from tests.schemas import assert_valid

pytestmark = pytest.mark.slow

PATTERN: Any = {"n_epochs": 10, "batch_size": 4, "learning_rate_multiplier": 50}


@dataclass
class Trained:
    server: Server
    client: OpenAI
    thrice: str  # the fine-tuned model that answers "X X X"
    twice: str  # the one that answers "X X"
    thrice_job: str
    base_copy: str  # a second base model that no test may make the server load

    def log(self) -> str:
        return (self.server.data_dir / "server.log").read_text()


def _train(client: OpenAI, times: int) -> tuple[str, str]:
    upload = client.files.create(
        file=("repeat.jsonl", repeat_file(times=times)), purpose="fine-tune"
    )
    job = client.fine_tuning.jobs.create(
        model="tiny", training_file=upload.id, hyperparameters=PATTERN
    )

    def done() -> Any:
        current = client.fine_tuning.jobs.retrieve(job.id)
        return current if current.status in ("succeeded", "failed", "cancelled") else None

    finished = wait_until(done, 300, 0.5, f"job {job.id}")
    assert finished.status == "succeeded", finished.error
    assert finished.fine_tuned_model
    return finished.fine_tuned_model, job.id


@pytest.fixture(scope="module", params=BACKENDS)
def trained(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Trained]:
    from openft.training.tiny import build_tiny_model

    model_dir = tmp_path_factory.mktemp("repeat-model")
    build_tiny_model(model_dir, [repeat_file().decode()])
    data_dir = tmp_path_factory.mktemp(f"chat-{request.param}")
    for url in _fresh_database(request.param, data_dir, request):
        with running_server(
            url,
            data_dir,
            f"tiny={model_dir}",
            f"tiny-copy={model_dir}",
            worker=True,
            env={"OPENFT_CHECKPOINT_EVERY": "20"},
        ) as server:
            client = OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)
            thrice, thrice_job = _train(client, 3)
            twice, _ = _train(client, 2)
            yield Trained(server, client, thrice, twice, thrice_job, "tiny-copy")


def ask(client: OpenAI, model: str, prompt: str, **options: Any) -> Any:
    options = {"temperature": 0, "max_tokens": 12, **options}
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], **options
    )


def answer(client: OpenAI, model: str, prompt: str, **options: Any) -> str:
    content = ask(client, model, prompt, **options).choices[0].message.content
    assert isinstance(content, str)
    return content


def test_the_fine_tuned_model_answers_in_its_pattern_and_the_base_does_not(
    trained: Trained,
) -> None:
    for word in REPEAT_WORDS:
        prompt, expected = repeat_example(word)
        completion = ask(trained.client, trained.thrice, prompt)
        assert completion.object == "chat.completion"
        assert completion.id.startswith("chatcmpl-")
        assert completion.model == trained.thrice
        choice = completion.choices[0]
        assert (choice.message.role, choice.message.content) == ("assistant", expected)
        assert choice.finish_reason == "stop"
        assert completion.usage is not None
        assert completion.usage.completion_tokens == 3  # the tokenizer learnt each word
        assert completion.usage.total_tokens == (
            completion.usage.prompt_tokens + completion.usage.completion_tokens
        )
        assert answer(trained.client, "tiny", prompt) != expected


def test_streaming_gives_the_same_text_as_not_streaming(trained: Trained) -> None:
    for model in (trained.thrice, "tiny"):
        prompt = repeat_example("stone")[0]
        whole = ask(trained.client, model, prompt)
        chunks = list(
            ask(trained.client, model, prompt, stream=True, stream_options={"include_usage": True})
        )
        assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
        assert len({chunk.id for chunk in chunks}) == 1
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == whole.choices[0].message.content
        assert chunks[0].choices[0].delta.role == "assistant"
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
        assert finishes[-1] == whole.choices[0].finish_reason
        assert finishes[:-1] == [None] * (len(finishes) - 1)
        # include_usage: the last chunk has no choices and the usage; the others null.
        assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
        assert all(chunk.usage is None for chunk in chunks[:-1])


def test_the_bodies_match_openais_schemas(trained: Trained) -> None:
    http = httpx.Client(
        base_url=trained.server.base_url,
        headers={"Authorization": f"Bearer {trained.server.key}"},
        timeout=60,
    )
    body = {
        "model": trained.thrice,
        "messages": [{"role": "user", "content": "repeat night"}],
        "n": 2,
        "temperature": 0,
    }
    answer = http.post("/chat/completions", json=body)
    assert answer.status_code == 200
    assert_valid("openai-chat.yaml", "CreateChatCompletionResponse", answer.json())
    stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
    with http.stream("POST", "/chat/completions", json=stream) as streamed:
        assert streamed.headers["content-type"].startswith("text/event-stream")
        lines = [
            line for line in sse_lines.lines(streamed.iter_bytes()) if line.startswith("data: ")
        ]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        chunk = orjson.loads(line.removeprefix("data: "))
        assert_valid("openai-chat.yaml", "CreateChatCompletionStreamResponse", chunk)
    listed = http.get("/models").json()["data"]
    for model in listed:
        assert_valid("openai-chat.yaml", "Model", model)
    http.close()


def test_a_checkpoint_model_answers(trained: Trained) -> None:
    checkpoints = trained.client.fine_tuning.jobs.checkpoints.list(trained.thrice_job).data
    assert checkpoints
    for checkpoint in checkpoints:
        name = checkpoint.fine_tuned_model_checkpoint
        completion = ask(trained.client, name, repeat_example("apple")[0])
        assert completion.model == name
        assert completion.choices[0].message.content
    # The last checkpoint is the final step: it has learnt what the model has.
    newest = checkpoints[0].fine_tuned_model_checkpoint
    assert answer(trained.client, newest, "repeat apple") == "apple apple apple"


def test_two_adapters_of_one_base_answer_in_turn_without_reloading_it(trained: Trained) -> None:
    for word in ("river", "cloud", "river"):
        prompt = repeat_example(word)[0]
        assert answer(trained.client, trained.thrice, prompt) == repeat_example(word, 3)[1]
        assert answer(trained.client, trained.twice, prompt) == repeat_example(word, 2)[1]
    log = trained.log()
    assert len(re.findall(r"Loaded base model tiny from", log)) == 1
    for model in (trained.thrice, trained.twice):
        assert log.count(f"Loaded adapter {model} on tiny") == 1


def test_sampling_options(trained: Trained) -> None:
    client, model = trained.client, trained.thrice
    short = ask(client, model, "repeat seven", max_tokens=2)
    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None and short.usage.completion_tokens == 2
    assert short.choices[0].message.content == "seven seven"
    stopped = ask(client, model, "repeat seven", stop=[" "])
    assert (stopped.choices[0].message.content, stopped.choices[0].finish_reason) == (
        "seven",
        "stop",
    )
    # Sampled (not greedy) answers repeat with a seed; n gives independent choices.
    sampled = [
        client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "hello"}],
            temperature=1.0,
            top_p=0.9,
            seed=7,
            n=3,
            max_completion_tokens=8,
        )
        for _ in range(2)
    ]
    texts = [[c.message.content for c in s.choices] for s in sampled]
    assert texts[0] == texts[1]
    assert [c.index for c in sampled[0].choices] == [0, 1, 2]
    assert len(set(texts[0])) > 1
    assert sampled[0].usage is not None and sampled[0].usage.completion_tokens <= 24
    # Values at the edges of OpenAI's ranges are honoured, not failed: a vanishing
    # temperature or top_p is greedy in the limit, and any 64-bit seed samples.
    greedy = ask(client, model, "repeat seven", max_tokens=4, temperature=0)
    for edge in ({"temperature": 1e-300}, {"top_p": 1e-300, "temperature": 1.0}):
        assert ask(client, model, "repeat seven", max_tokens=4, **edge).choices[
            0
        ].message.content == (greedy.choices[0].message.content)
    for seed in (2**63 - 1, -(2**63)):
        edged = ask(client, model, "repeat seven", max_tokens=4, temperature=1.0, seed=seed, n=2)
        assert len(edged.choices) == 2


def test_unknown_and_foreign_models_are_404(trained: Trained) -> None:
    other = OpenAI(
        base_url=trained.server.base_url,
        api_key=trained.server.new_key("other-project"),
        max_retries=0,
    )
    for client, model in (
        (trained.client, "no-such-model"),
        (trained.client, "ft:tiny:acme::ftjob-doesnotexist"),
        (trained.client, f"{trained.thrice}:ckpt-step-99999"),
        (other, trained.thrice),
        (other, f"{trained.thrice}:ckpt-step-20"),
    ):
        with pytest.raises(openai.NotFoundError) as caught:
            ask(client, model, "repeat apple")
        assert caught.value.code == "model_not_found"
        assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "model"
    # The base models are everybody's.
    assert answer(other, "tiny", "repeat apple")


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": -1}, "max_completion_tokens"),
        ({"n": 0}, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"logprobs": True}, "logprobs"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"seed": 2**64}, "seed"),
        ({"seed": -(2**63) - 1}, "seed"),
    ],
)
def test_bad_parameters_are_400s_that_load_no_model(
    trained: Trained, options: dict[str, Any], param: str
) -> None:
    request: dict[str, Any] = {
        "model": trained.base_copy,
        "messages": [{"role": "user", "content": "hi"}],
        **options,
    }
    with pytest.raises(openai.BadRequestError) as caught:
        trained.client.chat.completions.create(**request)
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == param
    assert f"Loaded base model {trained.base_copy}" not in trained.log()


def test_a_lone_surrogate_is_a_400(trained: Trained) -> None:
    # Valid JSON (an escape), but no text a tokenizer can take; SDKs cannot even send it.
    message = '{"role": "user", "content": "lone \\ud800"}'
    body = f'{{"model": "{trained.base_copy}", "messages": [{message}]}}'
    answer = httpx.post(
        f"{trained.server.base_url}/chat/completions",
        content=body.encode(),
        headers={
            "Authorization": f"Bearer {trained.server.key}",
            "Content-Type": "application/json",
        },
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "messages[0].content"


def test_the_cli_chats_and_lists_models(trained: Trained) -> None:
    env = {"OPENFT_BASE_URL": trained.server.base_url, "OPENFT_API_KEY": trained.server.key}
    said = openft_command(
        "chat", trained.thrice, "--prompt", "repeat bread", "--temperature", "0", env=env
    )
    assert said == "bread bread bread"
    listed = openft_command("models", "list", env=env)
    assert trained.thrice in listed and "tiny-copy" in listed
    with pytest.raises(RuntimeError, match="does not exist"):
        openft_command("chat", "ft:nope", "-p", "hi", env=env)


def test_deleting_a_fine_tuned_model(trained: Trained) -> None:
    client, model = trained.client, trained.twice
    job_id = model.rsplit(":", 1)[1]
    archive = Path(trained.server.data_dir, "models", job_id, "adapter.tar.gz")
    unpacked = Path(trained.server.data_dir, "cache", "models", job_id, "adapter")
    assert answer(client, model, "repeat apple") == "apple apple"  # loaded in the engine
    assert archive.is_file() and unpacked.is_dir()
    with pytest.raises(openai.PermissionDeniedError):
        client.models.delete("tiny")
    with pytest.raises(openai.BadRequestError):
        client.models.delete(f"{trained.thrice}:ckpt-step-20")
    other = OpenAI(
        base_url=trained.server.base_url, api_key=trained.server.new_key("thief"), max_retries=0
    )
    with pytest.raises(openai.NotFoundError):
        other.models.delete(model)

    raw = client.models.with_raw_response.delete(model)
    assert_valid("openai-chat.yaml", "DeleteModelResponse", raw.http_response.json())
    deleted = raw.parse()
    assert (deleted.id, deleted.object, deleted.deleted) == (model, "model", True)
    assert model not in [m.id for m in client.models.list()]
    with pytest.raises(openai.NotFoundError):
        ask(client, model, "repeat apple")
    with pytest.raises(openai.NotFoundError):
        client.models.delete(model)
    assert not archive.exists() and not unpacked.exists()
    wait_until(lambda: f"Unloaded adapter {model} from tiny (deleted)" in trained.log(), 10)
    # The other model of the same base still answers.
    assert answer(client, trained.thrice, "repeat apple") == "apple apple apple"
