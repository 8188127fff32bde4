"""The engine at scale: generation forwarded to a vLLM server (`vllm serve SOURCE
--served-model-name NAME --enable-lora`, with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True).

openft keeps the API, the keys and the projects; vLLM runs the models. A fine-tuned
model's adapter is registered with vLLM under its `ft:` name the first time it is asked
for (runtime LoRA loading, `POST /v1/load_lora_adapter`; vLLM must be able to read the
adapter's directory: the same machine or a shared file system), and the request is
forwarded, streamed, in OpenAI's shapes. No torch here: an API-only node can use it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx

from openft import sse_lines
from openft.domain.chat import ChatMessage, Sampling
from openft.domain.entities import ServedModel
from openft.domain.errors import InvalidRequest, ModelUnavailable
from openft.serving.interface import Engine, FinishReason, Output, Piece, Usage

log = logging.getLogger(__name__)


def _request_body(model: ServedModel, messages: list[ChatMessage], sampling: Sampling) -> Any:
    body: dict[str, Any] = {
        "model": model.name,
        "messages": [{"role": m.role, "content": m.content} for m in messages],
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "n": sampling.n,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if sampling.max_tokens is not None:
        body["max_tokens"] = sampling.max_tokens
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    return body


def _finish(reason: Any) -> FinishReason | None:
    if reason is None:
        return None
    return "length" if reason == "length" else "stop"


class VllmEngine(Engine):
    def __init__(self, base_url: str, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._base_url = base_url.rstrip("/").removesuffix("/v1")
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._registered: set[str] = set()
        self._registering: dict[str, asyncio.Lock] = {}

    def _client(self) -> httpx.AsyncClient:
        # Made on first use, on the serving event loop.
        if self._http is None:
            self._http = httpx.AsyncClient(
                base_url=self._base_url,
                transport=self._transport,
                timeout=httpx.Timeout(30, read=None),
            )
        return self._http

    async def generate(
        self,
        model: ServedModel,
        messages: list[ChatMessage],
        sampling: Sampling,
        tenant: str = "",  # vLLM schedules its own batch
    ) -> AsyncIterator[Output]:
        if model.adapter is not None:
            await self._register(model)
        body = _request_body(model, messages, sampling)
        try:
            async with self._client().stream("POST", "/v1/chat/completions", json=body) as r:
                if r.is_error:
                    await r.aread()
                    if r.status_code == 404:  # vLLM restarted and lost the adapter
                        self._registered.discard(model.name)
                    raise _error(r)
                async for line in sse_lines.alines(r.aiter_bytes()):
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line.removeprefix("data: "))
                    if "error" in chunk:
                        raise ModelUnavailable(f"vLLM failed: {chunk['error'].get('message')}")
                    for choice in chunk.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content") or ""
                        finish = _finish(choice.get("finish_reason"))
                        if text or finish:
                            yield Piece(choice["index"], text, finish)
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                        yield Usage(usage["prompt_tokens"], usage["completion_tokens"])
        except httpx.TransportError as exc:
            raise self._down(exc) from exc

    def _down(self, exc: Exception) -> ModelUnavailable:
        return ModelUnavailable(f"The vLLM server at {self._base_url} failed: {exc}")

    async def _register(self, model: ServedModel) -> None:
        if model.name in self._registered:
            return
        lock = self._registering.setdefault(model.name, asyncio.Lock())
        async with lock:
            if model.name in self._registered:
                return
            try:
                r = await self._client().post(
                    "/v1/load_lora_adapter",
                    json={"lora_name": model.name, "lora_path": model.adapter},
                )
            except httpx.TransportError as exc:
                raise self._down(exc) from exc
            if r.is_error and "already" not in r.text:
                raise ModelUnavailable(
                    f"vLLM could not load the adapter of {model.name}: {r.status_code} {r.text}"
                )
            self._registered.add(model.name)
            log.info("Registered adapter %s with vLLM (%s)", model.name, model.adapter)

    async def forget(self, fine_tuned_model: str) -> None:
        names = [
            n
            for n in self._registered
            if n == fine_tuned_model or n.startswith(f"{fine_tuned_model}:")
        ]
        for name in names:
            self._registered.discard(name)
            try:
                await self._client().post("/v1/unload_lora_adapter", json={"lora_name": name})
            except httpx.HTTPError as exc:  # vLLM drops it on its next restart anyway
                log.warning("could not unload %s from vLLM: %s", name, exc)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()


def _error(response: httpx.Response) -> Exception:
    try:
        message = response.json().get("message") or response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError, AttributeError):
        message = response.text[:500]
    if response.status_code == 400:
        return InvalidRequest(f"vLLM refused the request: {message}", param="messages")
    return ModelUnavailable(f"vLLM answered {response.status_code}: {message}")
