"""Chat completions on the project's models: every check is made, and the model resolved,
before an engine is asked for anything, so a refused request never loads a model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from openft.domain.chat import Caps, ChatMessage, Sampling, chat_messages
from openft.domain.entities import ServedModel
from openft.services.models import ModelService
from openft.serving.interface import Engine, Output, Usage


@dataclass(frozen=True, slots=True)
class ChatRequest:
    project_id: str
    model: ServedModel
    messages: list[ChatMessage]
    sampling: Sampling


class InferenceService:
    def __init__(self, models: ModelService, engine: Engine, caps: Caps | None = None) -> None:
        self._models = models
        self._engine = engine
        self.caps = caps or Caps()
        # Completion tokens this process's engine wrote (every engine reports its usage).
        self.tokens_generated = 0

    def prepare(
        self, project_id: str, model: str, messages: Sequence[Any], sampling: Sampling
    ) -> ChatRequest:
        """Check the request and find its model (blocking: it reads the database, and may
        unpack a checkpoint the first time)."""
        checked = chat_messages(messages)
        return ChatRequest(project_id, self._models.served(project_id, model), checked, sampling)

    def prepare_now(
        self, project_id: str, model: str, messages: Sequence[Any], sampling: Sampling
    ) -> ChatRequest | None:
        """`prepare` when only the store's read can block (the model's adapter is unpacked
        already, or it is a base model); else None: call `prepare` in a thread."""
        checked = chat_messages(messages)
        served = self._models.served_now(project_id, model)
        return None if served is None else ChatRequest(project_id, served, checked, sampling)

    async def generate(self, request: ChatRequest) -> AsyncIterator[Output]:
        outputs = self._engine.generate(
            request.model, request.messages, request.sampling, tenant=request.project_id
        )
        try:
            async for output in outputs:
                if isinstance(output, Usage):
                    self.tokens_generated += output.completion_tokens
                yield output
        finally:
            # Closing this generator early must stop the engine's generation too.
            await outputs.aclose()  # type: ignore[attr-defined]

    @property
    def engine(self) -> Engine:
        return self._engine

    async def delete_model(self, project_id: str, name: str) -> None:
        await asyncio.to_thread(self._models.delete, project_id, name)
        await self._engine.forget(name)

    async def aclose(self) -> None:
        await self._engine.aclose()
