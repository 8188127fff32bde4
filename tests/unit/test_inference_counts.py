"""The chat token count behind `/metrics`: every usage an engine reports is added, and
closing the service's stream early still stops the engine's generation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

from openft.domain.chat import ChatMessage, Sampling
from openft.domain.entities import ServedModel
from openft.services.inference import ChatRequest, InferenceService
from openft.serving.interface import Engine, Output, Piece, Usage


class Scripted(Engine):
    def __init__(self) -> None:
        self.closed = 0

    async def generate(
        self, model: ServedModel, messages: list[ChatMessage], sampling: Sampling, tenant: str = ""
    ) -> AsyncIterator[Output]:
        try:
            yield Piece(0, "hi", "stop")
            yield Usage(prompt_tokens=3, completion_tokens=5)
        finally:
            self.closed += 1

    async def forget(self, fine_tuned_model: str) -> None:
        pass


async def test_tokens_are_counted_and_an_early_close_reaches_the_engine() -> None:
    engine = Scripted()
    service = InferenceService(cast(Any, None), engine)
    request = ChatRequest("proj", cast(ServedModel, None), [], cast(Sampling, None))
    assert [output async for output in service.generate(request)][-1] == Usage(3, 5)
    assert (service.tokens_generated, engine.closed) == (5, 1)

    stream = service.generate(request)
    assert await anext(stream) == Piece(0, "hi", "stop")
    await stream.aclose()  # type: ignore[attr-defined]
    assert (service.tokens_generated, engine.closed) == (5, 2)
