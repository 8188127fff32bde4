"""What the engine's scheduler and its decoder share: a request (one client's chat
completion, and where its outputs go) and its sequences (each one choice being generated)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from openft.domain.chat import ChatMessage, Sampling
from openft.domain.entities import ServedModel
from openft.serving.interface import Output
from openft.serving.residency import LoadedBase

Item = Output | BaseException | None


@dataclass
class Request:
    model: ServedModel
    messages: list[ChatMessage]
    sampling: Sampling
    # Where its outputs go: its event loop's queue, through the engine's outbox.
    loop: asyncio.AbstractEventLoop
    outputs: asyncio.Queue[Item]
    outbox: list[tuple[Request, Item]]
    tenant: str = ""
    cancelled: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    open_choices: int = 0

    def emit(self, item: Item) -> None:
        """Send `item` to the client (once the scheduler's turn ends: `LocalEngine._flush`)."""
        self.outbox.append((self, item))


@dataclass
class Sequence:
    """One choice being generated."""

    request: Request
    index: int
    base: LoadedBase
    adapter: str | None
    prompt: list[int]
    generator: Any
    ids: list[int] = field(default_factory=list)
    # Its KV cache: each layer's (keys, values), (1, heads, length, dim), no padding (views
    # of the batch it was last run in); None before its prompt is run.
    past: list[tuple[Any, Any]] | None = None
    sent: int = 0  # characters of the decoded text already emitted
