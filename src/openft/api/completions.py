"""A generation's outputs assembled into OpenAI's objects: one `chat.completion`, or
`chat.completion.chunk` server-sent events ending with `data: [DONE]`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
from starlette.requests import Request

from openft.api.errors import error_json
from openft.api.sse import DONE
from openft.domain.errors import OpenFTError
from openft.serving.interface import FinishReason, Output, Usage
from openft.wire import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionChunkChoice,
    ChatCompletionDelta,
    CompletionUsage,
)

# Says which server build answered, as OpenAI's `system_fingerprint` does.
FINGERPRINT = "fp_openft"
DISCONNECT_POLL_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class Header:
    """What every object of one completion repeats."""

    id: str
    created: int
    model: str


def usage_json(usage: Usage) -> CompletionUsage:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


async def _gather(outputs: AsyncIterator[Output], head: Header, n: int) -> ChatCompletion:
    texts = [""] * n
    finishes: list[FinishReason] = ["stop"] * n
    usage = Usage(0, 0)
    async for output in outputs:
        if isinstance(output, Usage):
            usage = output
        else:
            texts[output.index] += output.text
            if output.finish_reason is not None:
                finishes[output.index] = output.finish_reason
    return {
        "id": head.id,
        "object": "chat.completion",
        "created": head.created,
        "model": head.model,
        "choices": [
            {
                "index": index,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "finish_reason": finish,
                "logprobs": None,
            }
            for index, (text, finish) in enumerate(zip(texts, finishes, strict=True))
        ],
        "usage": usage_json(usage),
        "system_fingerprint": FINGERPRINT,
    }


async def complete(
    outputs: AsyncIterator[Output], head: Header, n: int, request: Request
) -> ChatCompletion | None:
    """The whole completion; None if the client went away first (its generation is
    stopped: a plain response, unlike a stream, is not cancelled by a disconnect)."""
    task = asyncio.ensure_future(_gather(outputs, head, n))
    while True:
        done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_SECONDS)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return None


def _chunk(
    head: Header,
    choices: list[ChatCompletionChunkChoice],
    include_usage: bool,
    usage: CompletionUsage | None = None,
) -> bytes:
    chunk: ChatCompletionChunk = {
        "id": head.id,
        "object": "chat.completion.chunk",
        "created": head.created,
        "model": head.model,
        "choices": choices,
        "system_fingerprint": FINGERPRINT,
    }
    if include_usage:
        chunk["usage"] = usage
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


async def chunks(
    first: Output, outputs: AsyncIterator[Output], head: Header, include_usage: bool
) -> AsyncIterator[bytes]:
    """The stream: each choice opens with its role, then its text as it comes, and ends
    with its finish reason; with `include_usage`, a last chunk with no choices carries
    the usage (and every other chunk `usage: null`), as OpenAI sends it."""
    opened: set[int] = set()

    async def rest() -> AsyncIterator[Output]:
        yield first
        async for output in outputs:
            yield output

    try:
        async for output in rest():
            if isinstance(output, Usage):
                if include_usage:
                    yield _chunk(head, [], True, usage_json(output))
                continue
            delta: ChatCompletionDelta = {}
            if output.index not in opened:
                opened.add(output.index)
                delta["role"] = "assistant"
            if output.text or "role" in delta:
                delta["content"] = output.text
            if delta:
                choice: ChatCompletionChunkChoice = {
                    "index": output.index,
                    "delta": delta,
                    "finish_reason": None,
                    "logprobs": None,
                }
                yield _chunk(head, [choice], include_usage)
            if output.finish_reason is not None:
                end: ChatCompletionChunkChoice = {
                    "index": output.index,
                    "delta": {},
                    "finish_reason": output.finish_reason,
                    "logprobs": None,
                }
                yield _chunk(head, [end], include_usage)
    except OpenFTError as exc:
        # Too late for an HTTP status: the error travels as an event, as OpenAI's does.
        yield b"data: " + orjson.dumps(error_json(exc)) + b"\n\n"
        return
    finally:
        await outputs.aclose()  # type: ignore[attr-defined]
    yield DONE
