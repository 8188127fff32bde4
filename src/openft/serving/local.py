"""The embedded engine: transformers + peft in the server's own process.

One scheduler thread owns every model and does all torch work, so the event loop never
waits on it. It decodes the active sequences in turns: each turn, on each base, the
prompts of the new sequences go through one forward pass and the next tokens of the
others through another, whatever their adapters (peft's mixed batches, each row under its
own adapter; see `decoding`), so a long answer does not hold up a short one, and a new
request's first token comes after one turn, not after the requests before it have
finished. Turns are shared fairly between projects (tenants): each gets at
most `TURN_QUOTA` tokens a turn, its sequences taking their turns in rotation, and a
project running less than its fair share of the room (64 sequences) is admitted even
when the engine is full, so one project's `n=128` cannot hold another's first token. A
request whose client went away is dropped before its next token. Loading a model pauses
the turns while it runs.

This module is the scheduler (`LocalEngine`: inbox, admission, turns, hand-over to the
event loops). What it schedules is in three others: `residency` (one copy of each base
model in memory, with every LoRA adapter asked for loaded onto it the first time it is
used, and the least recently used adapters and bases evicted when what is loaded
outgrows the memory budget), `decoding` (the forward passes, KV caches, sampling and
stop strings) and `sequences` (a request and its choices, which they share).
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any

from openft.domain.chat import ChatMessage, Sampling
from openft.domain.entities import ServedModel
from openft.domain.errors import InvalidRequest, ModelUnavailable, OpenFTError
from openft.serving.decoding import Decoder, Unmixable
from openft.serving.interface import Engine, Output, Usage
from openft.serving.residency import LoadedBase, Residency
from openft.serving.sequences import Handover, Item, Request, Sequence

log = logging.getLogger(__name__)
# How long a request that wakes the idle engine waits for others sent with it (see
# `_take_inbox`): a millisecond or two against a first token's several (tens on a GPU).
ADMISSION_WAIT_SECONDS = 0.0015

# Sequences of one project decoded per turn: a project's many choices advance in rotation.
TURN_QUOTA = 8
# No tokenizer turns more than this many characters into one token on average: a prompt
# longer than the context times this is refused before it is tokenized at all.
MAX_CHARS_PER_TOKEN = 32
# How long the scheduler waits, after a turn that made new requests' first outputs, for
# their routes to send them before it runs the next forward pass (see `Handover`).
HANDOVER_SECONDS = 0.005
# The scheduler thread's niceness above the server's: where it shares a core with the
# event loop, the loop (parsing requests, sending chunks) runs first when both are ready.
SCHEDULER_NICENESS = 10
# Tokens of the latest conversations kept, in all (see `LocalEngine._prompt`).
PROMPT_TOKENS_KEPT = 1 << 16


def _token_ids(rendered: Any) -> list[int]:
    # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True).
    if hasattr(rendered, "keys"):
        rendered = rendered["input_ids"]
    return list(rendered)


class LocalEngine(Engine):
    def __init__(self, memory_budget_bytes: int, max_active: int = 64) -> None:
        self._max_active = max_active
        self._inbox: queue.SimpleQueue[Request | Callable[[], None] | None] = queue.SimpleQueue()
        # What the scheduler emitted since its last hand-over to the event loops.
        self._outbox: list[tuple[Request, Item]] = []
        self._models = Residency(memory_budget_bytes, self._busy, self._dropping)
        self._decoder = Decoder()
        self._active: list[Sequence] = []
        self._waiting: list[Request] = []
        # Where each tenant's rotation through its sequences stands.
        self._cursor: dict[str, int] = {}
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()
        # The latest conversations' tokens on each base (see `_prompt`); never changed once
        # made, so that sequences share them.
        self._prompts: OrderedDict[tuple[str, tuple[ChatMessage, ...]], list[int]] = OrderedDict()
        self._prompt_tokens = 0

    # The event loop's side.

    async def generate(
        self,
        model: ServedModel,
        messages: list[ChatMessage],
        sampling: Sampling,
        tenant: str = "",
    ) -> AsyncIterator[Output]:
        loop = asyncio.get_running_loop()
        outputs: asyncio.Queue[Item] = asyncio.Queue()
        request = Request(model, messages, sampling, loop, outputs, self._outbox, tenant)
        self._submit(request)
        try:
            while (item := await outputs.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
                # Asked for the next: the first was dealt with (a stream's chunk sent).
                request.taken()
        finally:
            request.cancelled = True  # the client left, or the request ended: either way
            request.taken()

    async def forget(self, fine_tuned_model: str) -> None:
        def unload() -> None:
            for base in list(self._models.bases.values()):
                for key, name in list(base.adapters.items()):
                    if name == fine_tuned_model or name.startswith(f"{fine_tuned_model}:"):
                        self._models.unload_adapter(base.name, key, why="deleted")

        self._submit(unload)

    @property
    def adapters_loaded(self) -> int:
        """Adapters held on the loaded bases now (read from another thread: a snapshot)."""
        return sum(len(base.adapters) for base in list(self._models.bases.values()))

    @property
    def adapter_loads(self) -> int:
        """Adapters loaded since the engine started (written by the scheduler thread
        alone; read, a whole int, by the metrics)."""
        return self._models.adapter_loads

    @property
    def forward_passes(self) -> int:
        """Forward passes run (each for a batch of sequences): read by tests and
        benchmarks."""
        return self._decoder.forward_passes

    @property
    def active_sequences(self) -> int:
        """How many choices are being generated now (a gauge, read without a lock)."""
        return len(self._active)

    async def aclose(self) -> None:
        if self._thread is not None:
            self._inbox.put(None)
            await asyncio.to_thread(self._thread.join, 30)

    def _submit(self, item: Request | Callable[[], None]) -> None:
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="openft-serving")
                self._thread.daemon = True
                self._thread.start()
        if isinstance(item, Request):
            item.submitted = time.monotonic()
        self._inbox.put(item)

    # The scheduler thread's side: everything below runs on it alone.

    def _run(self) -> None:
        import torch

        _lower_priority()
        with torch.inference_mode():
            while self._take_inbox():
                self._admit()
                self._turn()
                self._flush()
                # Let the event loop take the GIL between turns: a thread waiting for it
                # otherwise gets it only after the switch interval (5 ms), and the loop's
                # work (parsing new requests, sending chunks) is what clients wait on.
                time.sleep(0)
        closing = ModelUnavailable("The server is shutting down.")
        for request in {id(s.request): s.request for s in self._active}.values():
            request.emit(closing)
        for request in self._waiting:
            request.emit(closing)
        self._flush()

    def _flush(self) -> None:
        """Hand what was emitted to the event loops: one wake-up of each loop a turn,
        however many tokens the turn made (a wake-up is a system call, and the loop
        serves the clients between them)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Request, Item]]] = {}
        opened: dict[int, Request] = {}
        for request, item in self._outbox:
            by_loop.setdefault(request.loop, []).append((request, item))
            if not request.opened:
                request.opened = True
                if not request.cancelled:
                    opened[id(request)] = request
        self._outbox.clear()
        handover = Handover(len(opened)) if opened else None
        for request in opened.values():
            request.handover = handover
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the loop is gone: nobody is listening any more
                for request, _ in items:
                    request.cancelled = True
                    if request.handover is not None:
                        request.taken()
        if handover is not None:
            handover.done.wait(HANDOVER_SECONDS)

    def _take_inbox(self) -> bool:
        """Take what was submitted (waiting for it only when there is nothing to decode);
        False once the engine is closing."""
        idle = not (self._active or self._waiting)
        items = [self._inbox.get()] if idle else []
        # Woken from idle by a request: the ones sent with it (the playground's three
        # models, a client's parallel calls) are usually a moment behind, still being
        # prepared; a short wait lets one prefill take them all, where starting at once
        # would make them wait for the first one's pass and then take one of their own.
        # The wait counts from the first one's submission, not from this thread's waking:
        # the event loop, which runs first, has often sent the others by then.
        head = items[0] if idle else None
        until = head.submitted + ADMISSION_WAIT_SECONDS if isinstance(head, Request) else 0.0
        while True:
            try:
                left = until - time.monotonic()
                items.append(
                    self._inbox.get(timeout=left) if left > 0 else self._inbox.get_nowait()
                )
            except queue.Empty:
                break
        for item in items:
            if item is None:
                return False
            if isinstance(item, Request):
                self._waiting.append(item)
            else:
                item()
        return True

    def _admit(self) -> None:
        """Start waiting requests, the project with the fewest sequences running first
        (first come first within it), while there is room, and beyond it while a project
        runs fewer than its fair share of the room: one project's many choices never
        keep another's requests waiting (at most twice the room is used then)."""
        while self._waiting:
            running = Counter(s.request.tenant for s in self._active)
            request = min(self._waiting, key=lambda r: running[r.tenant])
            tenants = len(set(running) | {r.tenant for r in self._waiting})
            share = max(1, self._max_active // tenants)
            full = len(self._active) >= self._max_active
            if full and running[request.tenant] >= share:
                return
            self._waiting.remove(request)
            if request.cancelled:
                continue
            try:
                self._start_request(request)
            except Exception as exc:
                request.emit(_as_error(exc))

    def _start_request(self, request: Request) -> None:
        import torch

        base = self._models.base(request.model.base)
        adapter = None
        if request.model.adapter is not None:
            adapter = self._models.adapter(base, request.model)
        characters = sum(len(m.content) for m in request.messages)
        if base.context is not None and characters > base.context * MAX_CHARS_PER_TOKEN:
            raise InvalidRequest(
                f"This model's maximum context length is {base.context} tokens. However, "
                f"the messages hold {characters} characters, more than that many tokens can "
                "carry. Please reduce the length of the messages.",
                param="messages",
                code="context_length_exceeded",
            )
        prompt = self._prompt(base, request.messages)
        limit = request.sampling.max_tokens
        if base.context is not None and len(prompt) + (limit or 1) > base.context:
            raise InvalidRequest(
                f"This model's maximum context length is {base.context} tokens. However, you "
                f"requested {len(prompt) + (limit or 1)} tokens ({len(prompt)} in the "
                f"messages, {limit or 1} in the completion). Please reduce the length of the "
                "messages or completion.",
                param="messages",
                code="context_length_exceeded",
            )
        request.prompt_tokens = len(prompt)
        request.open_choices = request.sampling.n
        for index in range(request.sampling.n):
            generator = torch.Generator(device=base.device)
            if request.sampling.seed is None:
                generator.seed()
            else:
                # Any 64-bit seed, and the next ones for n > 1, as torch takes them.
                generator.manual_seed((request.sampling.seed + index) % 2**64)
            self._active.append(Sequence(request, index, base, adapter, prompt, generator))
        self._models.touch(base.name, adapter)

    def _prompt(self, base: LoadedBase, messages: list[ChatMessage]) -> list[int]:
        """The conversation's tokens as the base's chat template renders them: the same
        conversation asked of several models of one base (the playground's three, a
        client's retries) is rendered once (the template is most of admitting a request)."""
        key = (base.name, tuple(messages))
        prompt = self._prompts.get(key)
        if prompt is None:
            prompt = _token_ids(
                base.tokenizer.apply_chat_template(
                    [{"role": m.role, "content": m.content} for m in messages],
                    tokenize=True,
                    add_generation_prompt=True,
                )
            )
            self._prompts[key] = prompt
            self._prompt_tokens += len(prompt)
            while self._prompt_tokens > PROMPT_TOKENS_KEPT:
                self._prompt_tokens -= len(self._prompts.popitem(last=False)[1])
        else:
            self._prompts.move_to_end(key)
        return prompt

    def _turn(self) -> None:
        """One token for each sequence whose turn it is: on each base, the prompts of the
        new sequences in one forward pass, the next tokens of the others in another."""
        self._active = [s for s in self._active if not s.request.cancelled]
        decoded: set[tuple[int, ...]] = set()
        started = self._passes(self._turn_takers(), decoded)
        # New answers whose first token gave no text (an incomplete character, held back)
        # while others started with them gave theirs: one more pass for them alone now.
        # Else they would wait for the others' first chunks to be sent (the hand-over)
        # and then a pass of them all: the slowest of answers started together (the
        # playground's three) a whole pass behind.
        running = {id(s) for s in self._active}
        silent = [s for s in started if s.sent == 0 and id(s) in running]
        if silent and len(silent) < len(started):
            self._passes(silent, decoded)
        self._active = [s for s in self._active if not s.request.cancelled]
        self._decoder.keep(decoded, {id(s) for s in self._active})

    def _passes(self, sequences: list[Sequence], decoded: set[tuple[int, ...]]) -> list[Sequence]:
        """One token for each of `sequences`, in a forward pass per base (and per adapter
        where peft cannot mix them): the new ones' prompts, the others' last tokens. The
        batches decoded go into `decoded`; returns the sequences whose prompts were run."""
        batches: dict[tuple[str, bool, str | None], list[Sequence]] = {}
        for sequence in sequences:
            base = sequence.base
            # Where peft cannot mix adapters in a batch (see `Decoder`), one per adapter.
            adapter = sequence.adapter if base.mixed is False else None
            key = (base.name, sequence.past is not None, adapter)
            batches.setdefault(key, []).append(sequence)
        started: list[Sequence] = []
        # Each batch's rows grouped by adapter: a mixed pass then takes each adapter's
        # rows as one slice (see `decoding._MixedRows`).
        work = [
            sorted(batches[key], key=lambda s: s.adapter or "")
            for key in sorted(batches, key=lambda k: (k[0], k[1], k[2] or ""))
        ]
        while work:
            batch = [s for s in work.pop(0) if not s.request.cancelled]
            if not batch:
                continue
            try:
                if batch[0].past is not None:
                    decoded.add(tuple(id(s) for s in batch))
                    rows = self._decoder.decode(batch)
                else:
                    rows = self._decoder.prefill(batch)
                    started += batch
            except Unmixable:
                groups: dict[str | None, list[Sequence]] = {}
                for sequence in batch:
                    groups.setdefault(sequence.adapter, []).append(sequence)
                work[:0] = list(groups.values())
                continue
            except Exception as exc:
                for request in {id(s.request): s.request for s in batch}.values():
                    request.cancelled = True
                    request.emit(_as_error(exc))
                log.exception("generation failed on %s", batch[0].base.name)
                continue
            for sequence, logits in zip(batch, rows, strict=True):
                if sequence.request.cancelled:
                    continue
                try:
                    finish = self._decoder.advance(sequence, logits)
                except Exception as exc:
                    sequence.request.cancelled = True
                    sequence.request.emit(_as_error(exc))
                    log.exception("generation failed on %s", sequence.request.model.name)
                    continue
                if finish is not None:
                    self._active.remove(sequence)
                    self._finish(sequence)
        return started

    def _turn_takers(self) -> list[Sequence]:
        """At most `TURN_QUOTA` sequences of each tenant, the next ones in its rotation."""
        by_tenant: dict[str, list[Sequence]] = {}
        for sequence in self._active:
            by_tenant.setdefault(sequence.request.tenant, []).append(sequence)
        self._cursor = {t: c for t, c in self._cursor.items() if t in by_tenant}
        chosen: list[Sequence] = []
        for tenant, sequences in by_tenant.items():
            start = self._cursor.get(tenant, 0) % len(sequences)
            taken = (sequences[start:] + sequences[:start])[:TURN_QUOTA]
            self._cursor[tenant] = start + len(taken)
            chosen.extend(taken)
        return chosen

    def _busy(self, base: str, adapter: str | None) -> bool:
        """Whether an active sequence uses the base (and the adapter, if one is named)."""
        return any(
            s.base.name == base and (adapter is None or s.adapter == adapter) for s in self._active
        )

    def _dropping(self, base: LoadedBase, key: str, why: str) -> None:
        """An adapter is about to be unloaded: a deleted model stops answering at once."""
        for sequence in self._active:
            if sequence.base is base and sequence.adapter == key:
                sequence.request.cancelled = True
                sequence.request.emit(ModelUnavailable(f"The model was {why}."))
        self._active = [s for s in self._active if not s.request.cancelled]

    def _finish(self, sequence: Sequence) -> None:
        request = sequence.request
        request.open_choices -= 1
        if request.open_choices == 0:
            request.emit(Usage(request.prompt_tokens, request.completion_tokens))
            request.emit(None)


def _lower_priority() -> None:
    """Make the calling thread (the scheduler) yield the CPU to the event loop's."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SCHEDULER_NICENESS)
    except (AttributeError, OSError):  # not on this platform, or not allowed: no matter
        pass


def _deliver(items: list[tuple[Request, Item]]) -> None:
    """On the event loop: put each item in its request's queue."""
    for request, item in items:
        request.outputs.put_nowait(item)


def _as_error(exc: Exception) -> BaseException:
    if isinstance(exc, OpenFTError):
        return exc
    return ModelUnavailable(f"Generation failed: {type(exc).__name__}: {exc}")
