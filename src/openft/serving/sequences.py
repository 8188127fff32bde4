"""What the engine's scheduler and its decoder share: a request (one client's chat
completion, and where its outputs go) and its sequences (each one choice being generated)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from openft.domain.chat import ChatMessage, Sampling
from openft.domain.entities import ServedModel
from openft.serving.interface import Output
from openft.serving.residency import LoadedBase

Item = Output | BaseException | None


class Handover:
    """First outputs of new requests handed to the event loops in one turn: the scheduler
    waits (a little) until their routes have taken them, i.e. sent each first chunk, before
    its next forward pass, which on a shared core would otherwise hold the GIL and the CPU
    while the loop sends them one by one."""

    def __init__(self, requests: int) -> None:
        self._left = requests
        self._lock = threading.Lock()
        self.done = threading.Event()

    def taken(self) -> None:
        """One request's first output was taken (or it ended): on its event loop."""
        with self._lock:
            self._left -= 1
            if self._left <= 0:
                self.done.set()


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
    submitted: float = 0.0  # when it was handed to the engine (time.monotonic)
    cancelled: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    open_choices: int = 0
    # Whether anything was emitted yet; the handover its first output is part of, until its
    # route takes it (see `Handover`).
    opened: bool = False
    handover: Handover | None = None

    def emit(self, item: Item) -> None:
        """Send `item` to the client (once the scheduler's turn ends: `LocalEngine._flush`)."""
        self.outbox.append((self, item))

    def taken(self) -> None:
        """On the event loop: the route took its first output, or left."""
        handover, self.handover = self.handover, None
        if handover is not None:
            handover.taken()


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
