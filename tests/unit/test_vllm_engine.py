"""The vLLM engine's side of the conversation, against a stand-in for vLLM's HTTP API
(runtime LoRA loading and OpenAI-style streamed chat completions, as vLLM documents
them) served in this process. vLLM itself needs a GPU; this checks what openft sends and
how it reads the answers, not vLLM."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from openft.domain.chat import ChatMessage, Sampling
from openft.domain.entities import BaseModel, ServedModel
from openft.domain.errors import InvalidRequest, ModelUnavailable
from openft.serving.interface import Output, Piece, Usage
from openft.serving.vllm import VllmEngine

BASE = BaseModel("base", "org/base-model")
TUNED = ServedModel("ft:base:p::ftjob-1", BASE, "/data/models/ftjob-1/adapter")
CHECKPOINT = ServedModel("ft:base:p::ftjob-1:ckpt-step-4", BASE, "/data/serving/ftjob-1/c")
HELLO = [ChatMessage("user", "say hello world")]


class FakeVllm:
    def __init__(self) -> None:
        self.loaded: dict[str, str] = {}
        self.loads: list[str] = []
        self.bodies: list[dict[str, Any]] = []
        self.app = FastAPI()
        self.app.post("/v1/load_lora_adapter")(self.load)
        self.app.post("/v1/unload_lora_adapter")(self.unload)
        self.app.post("/v1/chat/completions")(self.chat)

    async def load(self, request: Request) -> Any:
        body = await request.json()
        self.loads.append(body["lora_name"])
        if body["lora_name"] in self.loaded:
            message = f"The lora adapter '{body['lora_name']}' has already been loaded."
            return JSONResponse({"object": "error", "message": message}, status_code=400)
        self.loaded[body["lora_name"]] = body["lora_path"]
        return f"Success: LoRA adapter '{body['lora_name']}' added successfully."

    async def unload(self, request: Request) -> Any:
        self.loaded.pop((await request.json())["lora_name"])
        return "Success"

    async def chat(self, request: Request) -> Any:
        body = await request.json()
        self.bodies.append(body)
        if body["model"] != "base" and body["model"] not in self.loaded:
            message = f"The model `{body['model']}` does not exist."
            return JSONResponse({"object": "error", "message": message}, status_code=404)
        if len(body["messages"][-1]["content"]) > 100:
            message = "This model's maximum context length is 16 tokens."
            return JSONResponse({"object": "error", "message": message}, status_code=400)
        words = body["messages"][-1]["content"].split()[1:]

        async def frames() -> AsyncIterator[str]:
            for index in range(body["n"]):
                for n, word in enumerate(words):
                    delta = {"content": word if n == 0 else f" {word}"}
                    if n == 0:
                        delta["role"] = "assistant"
                    choice = {"index": index, "delta": delta, "finish_reason": None}
                    yield f"data: {json.dumps({'choices': [choice], 'usage': None})}\n\n"
                end = {"index": index, "delta": {}, "finish_reason": "length"}
                yield f"data: {json.dumps({'choices': [end], 'usage': None})}\n\n"
            usage = {"prompt_tokens": 5, "completion_tokens": 2 * body["n"], "total_tokens": 0}
            yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(frames(), media_type="text/event-stream")


@pytest.fixture
def vllm() -> FakeVllm:
    return FakeVllm()


@pytest.fixture
def engine(vllm: FakeVllm) -> VllmEngine:
    return VllmEngine("http://vllm:8000/v1", transport=httpx.ASGITransport(app=vllm.app))


async def run(engine: VllmEngine, model: ServedModel, sampling: Sampling) -> list[Output]:
    return [output async for output in engine.generate(model, HELLO, sampling)]


async def test_an_adapter_is_registered_once_under_its_name_and_requests_are_forwarded(
    engine: VllmEngine, vllm: FakeVllm
) -> None:
    sampling = Sampling(max_tokens=7, temperature=0.5, top_p=0.9, seed=3, stop=("x",), n=2)
    first = await run(engine, TUNED, sampling)
    await run(engine, TUNED, Sampling())
    assert vllm.loads == [TUNED.name]
    assert vllm.loaded == {TUNED.name: TUNED.adapter}
    body = vllm.bodies[0]
    assert body["model"] == TUNED.name
    assert body["messages"] == [{"role": "user", "content": "say hello world"}]
    assert {k: body[k] for k in ("max_tokens", "temperature", "top_p", "seed", "stop", "n")} == {
        "max_tokens": 7,
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": 3,
        "stop": ["x"],
        "n": 2,
    }
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert first == [
        Piece(0, "hello"),
        Piece(0, " world"),
        Piece(0, "", "length"),
        Piece(1, "hello"),
        Piece(1, " world"),
        Piece(1, "", "length"),
        Usage(5, 4),
    ]
    # A base model is served under its openft name, with nothing to register.
    await run(engine, ServedModel("base", BASE), Sampling())
    assert vllm.bodies[-1]["model"] == "base" and vllm.loads == [TUNED.name]


async def test_forgetting_a_model_unloads_it_and_its_checkpoints(
    engine: VllmEngine, vllm: FakeVllm
) -> None:
    await run(engine, TUNED, Sampling())
    await run(engine, CHECKPOINT, Sampling())
    await engine.forget(TUNED.name)
    assert vllm.loaded == {}
    await run(engine, TUNED, Sampling())  # registered again if it is asked for again
    assert vllm.loads == [TUNED.name, CHECKPOINT.name, TUNED.name]


async def test_an_adapter_vllm_already_holds_is_used_as_it_is(
    engine: VllmEngine, vllm: FakeVllm
) -> None:
    vllm.loaded[TUNED.name] = TUNED.adapter or ""  # another openft process loaded it
    assert (await run(engine, TUNED, Sampling()))[-1] == Usage(5, 2)


async def test_vllm_errors_become_openft_errors(engine: VllmEngine, vllm: FakeVllm) -> None:
    too_long = [ChatMessage("user", "x" * 200)]
    with pytest.raises(InvalidRequest, match="maximum context length"):
        [o async for o in engine.generate(ServedModel("base", BASE), too_long, Sampling())]
    with pytest.raises(ModelUnavailable, match="404"):
        await run(engine, ServedModel("other", BASE), Sampling())
    down = VllmEngine("http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(ModelUnavailable, match="failed"):
        await run(down, TUNED, Sampling())
    await down.aclose()
