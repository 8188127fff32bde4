"""What services see of an inference engine: no torch here, so API-only nodes import it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from openft.domain.chat import ChatMessage, Sampling
from openft.domain.entities import ServedModel

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class Piece:
    """New text of choice `index`; its last piece carries why it ended."""

    index: int
    text: str
    finish_reason: FinishReason | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens read and written by one request: the last thing a generation yields."""

    prompt_tokens: int
    completion_tokens: int


Output = Piece | Usage


class Engine(ABC):
    @property
    def adapter_loads(self) -> int:
        """For the metrics: adapters loaded since the engine started (0 where the engine
        loads nothing itself: vLLM reports its own)."""
        return 0

    @property
    def adapters_loaded(self) -> int:
        """For the metrics: adapters held now (0 where the engine holds none itself)."""
        return 0

    @abstractmethod
    def generate(
        self,
        model: ServedModel,
        messages: list[ChatMessage],
        sampling: Sampling,
        tenant: str = "",
    ) -> AsyncIterator[Output]:
        """Generate `sampling.n` choices: pieces as they are decoded (choices interleaved,
        each ending with a finish reason), then the usage. Closing the iterator early
        stops the generation. Raises `ModelUnavailable` when the model cannot be loaded
        and `InvalidRequest` when the prompt does not fit its context. `tenant` (the
        project asking) is whom an engine shares its turns fairly between."""

    @abstractmethod
    async def forget(self, fine_tuned_model: str) -> None:
        """Drop whatever this engine holds of a deleted fine-tuned model and of its
        checkpoints' models (their adapters)."""

    async def aclose(self) -> None:  # noqa: B027 (an engine may hold nothing to close)
        """Stop generating and release models."""


class NoEngine(Engine):
    """A server started without serving: every chat completion is a clear 503."""

    def __init__(self, why: str) -> None:
        self._why = why

    async def generate(
        self,
        model: ServedModel,
        messages: list[ChatMessage],
        sampling: Sampling,
        tenant: str = "",
    ) -> AsyncIterator[Output]:
        from openft.domain.errors import ModelUnavailable

        raise ModelUnavailable(f"This server does not run models: {self._why}")
        yield  # an async generator, like every engine's

    async def forget(self, fine_tuned_model: str) -> None:
        pass
