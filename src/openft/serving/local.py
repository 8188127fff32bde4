"""The embedded engine: transformers + peft in the server's own process.

One copy of each base model in memory, with every LoRA adapter asked for loaded onto it
(peft's multi-adapter model) the first time it is used, and the least recently used
adapters and bases evicted when what is loaded outgrows the memory budget.

One scheduler thread owns every model and does all torch work, so the event loop never
waits on it. It decodes the active sequences in turns, grouped by adapter so that it
switches adapters at most once per adapter per turn: a long answer does not hold up a
short one, and a new request's first token comes after one turn, not after the requests
before it have finished. Turns are shared fairly between projects (tenants): each gets at
most `TURN_QUOTA` tokens a turn, its sequences taking their turns in rotation, and a
project running less than its fair share of the room (64 sequences) is admitted even
when the engine is full, so one project's `n=128` cannot hold another's first token. A
request whose client went away is dropped before its next token. Sequences are not
batched into one forward pass (each has its own KV cache); loading a model pauses the
turns while it runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import queue
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openft.domain.chat import ChatMessage, Sampling
from openft.domain.chat_template import CHAT_TEMPLATE
from openft.domain.entities import BaseModel, ServedModel
from openft.domain.errors import InvalidRequest, ModelUnavailable, OpenFTError
from openft.serving.interface import Engine, FinishReason, Output, Piece, Usage

log = logging.getLogger(__name__)

MiB = 1024 * 1024
# Sequences of one project decoded per turn: a project's many choices advance in rotation.
TURN_QUOTA = 8
# No tokenizer turns more than this many characters into one token on average: a prompt
# longer than the context times this is refused before it is tokenized at all.
MAX_CHARS_PER_TOKEN = 32
Item = Output | BaseException | None


def adapter_key(model_name: str) -> str:
    """peft's name for an adapter (a module attribute: no dots or colons)."""
    return "ft_" + hashlib.sha256(model_name.encode()).hexdigest()[:20]


def _token_ids(rendered: Any) -> list[int]:
    # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True).
    if hasattr(rendered, "keys"):
        rendered = rendered["input_ids"]
    return list(rendered)


@dataclass
class _Request:
    model: ServedModel
    messages: list[ChatMessage]
    sampling: Sampling
    # Where its outputs go: its event loop's queue, through the engine's outbox.
    loop: asyncio.AbstractEventLoop
    outputs: asyncio.Queue[Item]
    outbox: list[tuple[_Request, Item]]
    tenant: str = ""
    cancelled: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    open_choices: int = 0

    def emit(self, item: Item) -> None:
        """Send `item` to the client (once the scheduler's turn ends: `_flush`)."""
        self.outbox.append((self, item))


@dataclass
class _Base:
    """A loaded base model and the LoRA adapters loaded onto it."""

    name: str
    model: Any
    tokenizer: Any
    eos: frozenset[int]
    context: int | None
    size: int
    device: Any
    # Extra arguments of each forward pass: `logits_to_keep=1` where the model takes it
    # (a long prompt's prefill then computes one row of logits, not one per token).
    extra: dict[str, Any]
    # The adapters loaded on it: peft's name for each, and its model's name (sizes are
    # kept with the engine's LRU order).
    adapters: dict[str, str] = field(default_factory=dict)
    # Which adapter the LoRA layers use, and whether they are on (None: not known, after
    # an adapter was loaded): switched only when the next sequence needs another state.
    active: str | None = None
    enabled: bool | None = None
    # Whether peft runs this base's adapters together in one batch (None: not tried yet).
    mixed: bool | None = None

    @property
    def forward(self) -> Any:
        """The transformers model to run: inside peft's wrapper (whose forward adds
        Python work to every step), with the LoRA layers peft put in it."""
        return self.model.get_base_model() if self.adapters else self.model


@dataclass
class _Sequence:
    """One choice being generated."""

    request: _Request
    index: int
    base: _Base
    adapter: str | None
    prompt: list[int]
    generator: Any
    ids: list[int] = field(default_factory=list)
    # Its KV cache: each layer's (keys, values), (1, heads, length, dim), no padding (views
    # of the batch it was last run in); None before its prompt is run.
    past: list[tuple[Any, Any]] | None = None
    sent: int = 0  # characters of the decoded text already emitted


class LocalEngine(Engine):
    def __init__(self, memory_budget_bytes: int, max_active: int = 64) -> None:
        self._budget = memory_budget_bytes
        self._max_active = max_active
        self._inbox: queue.SimpleQueue[_Request | Callable[[], None] | None] = queue.SimpleQueue()
        # What the scheduler emitted since its last hand-over to the event loops.
        self._outbox: list[tuple[_Request, Item]] = []
        self._bases: dict[str, _Base] = {}
        # What is loaded, least recently used first: (base, None) for a base model,
        # (base, adapter) for an adapter on it; the values are sizes in bytes.
        self._lru: OrderedDict[tuple[str, str | None], int] = OrderedDict()
        self._active: list[_Sequence] = []
        self._waiting: list[_Request] = []
        # The joined KV cache of each batch decoded in the last turn (by its sequences'
        # ids), with where each sequence's cache began in it (see `_decode`).
        self._kept: dict[tuple[int, ...], tuple[Any, list[int]]] = {}
        # Where each tenant's rotation through its sequences stands.
        self._cursor: dict[str, int] = {}
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()
        # Written by the scheduler thread alone; read (a whole int) by the metrics.
        self.adapter_loads = 0
        # Forward passes run (each for a batch of sequences): read by tests and benchmarks.
        self.forward_passes = 0

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
        request = _Request(model, messages, sampling, loop, outputs, self._outbox, tenant)
        self._submit(request)
        try:
            while (item := await outputs.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            request.cancelled = True  # the client left, or the request ended: either way

    async def forget(self, fine_tuned_model: str) -> None:
        def unload() -> None:
            for base in list(self._bases.values()):
                for key, name in list(base.adapters.items()):
                    if name == fine_tuned_model or name.startswith(f"{fine_tuned_model}:"):
                        self._unload_adapter(base.name, key, why="deleted")

        self._submit(unload)

    @property
    def adapters_loaded(self) -> int:
        """Adapters held on the loaded bases now (read from another thread: a snapshot)."""
        return sum(len(base.adapters) for base in list(self._bases.values()))

    @property
    def active_sequences(self) -> int:
        """How many choices are being generated now (a gauge, read without a lock)."""
        return len(self._active)

    async def aclose(self) -> None:
        if self._thread is not None:
            self._inbox.put(None)
            await asyncio.to_thread(self._thread.join, 30)

    def _submit(self, item: _Request | Callable[[], None]) -> None:
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="openft-serving")
                self._thread.daemon = True
                self._thread.start()
        self._inbox.put(item)

    # The scheduler thread's side: everything below runs on it alone.

    def _run(self) -> None:
        import torch

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
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Request, Item]]] = {}
        for request, item in self._outbox:
            by_loop.setdefault(request.loop, []).append((request, item))
        self._outbox.clear()
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the loop is gone: nobody is listening any more
                for request, _ in items:
                    request.cancelled = True

    def _take_inbox(self) -> bool:
        """Take what was submitted (waiting for it only when there is nothing to decode);
        False once the engine is closing."""
        items = [] if self._active or self._waiting else [self._inbox.get()]
        while True:
            try:
                items.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        for item in items:
            if item is None:
                return False
            if isinstance(item, _Request):
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

    def _start_request(self, request: _Request) -> None:
        import torch

        base = self._base(request.model.base)
        adapter = None
        if request.model.adapter is not None:
            adapter = self._adapter(base, request.model)
        characters = sum(len(m.content) for m in request.messages)
        if base.context is not None and characters > base.context * MAX_CHARS_PER_TOKEN:
            raise InvalidRequest(
                f"This model's maximum context length is {base.context} tokens. However, "
                f"the messages hold {characters} characters, more than that many tokens can "
                "carry. Please reduce the length of the messages.",
                param="messages",
                code="context_length_exceeded",
            )
        prompt = _token_ids(
            base.tokenizer.apply_chat_template(
                [{"role": m.role, "content": m.content} for m in request.messages],
                tokenize=True,
                add_generation_prompt=True,
            )
        )
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
            self._active.append(_Sequence(request, index, base, adapter, prompt, generator))
        self._touch(base.name, adapter)

    def _turn(self) -> None:
        """One token for each sequence whose turn it is: on each base, the prompts of the
        new sequences in one forward pass, the next tokens of the others in another."""
        self._active = [s for s in self._active if not s.request.cancelled]
        batches: dict[tuple[str, bool, str | None], list[_Sequence]] = {}
        for sequence in self._turn_takers():
            base = sequence.base
            # Where peft cannot mix adapters in a batch (see `_run_model`), one per adapter.
            adapter = sequence.adapter if base.mixed is False else None
            key = (base.name, sequence.past is not None, adapter)
            batches.setdefault(key, []).append(sequence)
        decoded: set[tuple[int, ...]] = set()
        work = [batches[key] for key in sorted(batches, key=lambda k: (k[0], k[1], k[2] or ""))]
        while work:
            batch = [s for s in work.pop(0) if not s.request.cancelled]
            if not batch:
                continue
            try:
                if batch[0].past is not None:
                    decoded.add(tuple(id(s) for s in batch))
                    rows = self._decode(batch)
                else:
                    rows = self._prefill(batch)
            except _Unmixable:
                groups: dict[str | None, list[_Sequence]] = {}
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
                    finish = self._advance(sequence, logits)
                except Exception as exc:
                    sequence.request.cancelled = True
                    sequence.request.emit(_as_error(exc))
                    log.exception("generation failed on %s", sequence.request.model.name)
                    continue
                if finish is not None:
                    self._active.remove(sequence)
                    self._finish(sequence)
        self._active = [s for s in self._active if not s.request.cancelled]
        # Joined caches are kept for the next turn's same batches only, and only while
        # all their sequences run.
        running = {id(s) for s in self._active}
        self._kept = {k: v for k, v in self._kept.items() if k in decoded and running.issuperset(k)}

    def _turn_takers(self) -> list[_Sequence]:
        """At most `TURN_QUOTA` sequences of each tenant, the next ones in its rotation."""
        by_tenant: dict[str, list[_Sequence]] = {}
        for sequence in self._active:
            by_tenant.setdefault(sequence.request.tenant, []).append(sequence)
        self._cursor = {t: c for t, c in self._cursor.items() if t in by_tenant}
        chosen: list[_Sequence] = []
        for tenant, sequences in by_tenant.items():
            start = self._cursor.get(tenant, 0) % len(sequences)
            taken = (sequences[start:] + sequences[:start])[:TURN_QUOTA]
            self._cursor[tenant] = start + len(taken)
            chosen.extend(taken)
        return chosen

    def _prefill(self, batch: list[_Sequence]) -> Any:
        """Run the prompts of new sequences (one base) in one forward pass: each one's
        KV cache, and the logits of its last prompt token (a row each)."""
        import torch
        from transformers import DynamicCache

        base = batch[0].base
        lengths = [len(s.prompt) for s in batch]
        width = max(lengths)
        # Right padding: under causal attention no prompt token sees the pads after it,
        # so no mask is needed, and the pads' cache entries are cut off below.
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        for row, sequence in enumerate(batch):
            ids[row, : len(sequence.prompt)] = torch.tensor(sequence.prompt)
        extra = dict(base.extra)
        last = [n - 1 for n in lengths]
        columns = last  # where each row's logits are in the output
        if extra and min(lengths) != width:
            # Only the rows' last positions through the LM head (a tensor keeps those).
            kept = sorted(set(last))
            extra["logits_to_keep"] = torch.tensor(kept, device=base.device)
            columns = [kept.index(i) for i in last]
        elif extra:
            columns = [0] * len(batch)
        # A plain cache (full attention in every layer) that `_decode` can pad and join.
        cache = DynamicCache()
        out = self._run_model(
            batch, input_ids=ids.to(base.device), past_key_values=cache, use_cache=True, **extra
        )
        layers = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        for row, (sequence, n) in enumerate(zip(batch, lengths, strict=True)):
            sequence.past = [(k[row : row + 1, :, :n], v[row : row + 1, :, :n]) for k, v in layers]
        return out.logits[torch.arange(len(batch)), torch.tensor(columns)]

    def _decode(self, batch: list[_Sequence]) -> Any:
        """Feed each sequence's last token (one base) in one forward pass: its cache grows
        by it, and its next token's logits (a row each)."""
        import torch
        from transformers import DynamicCache

        base = batch[0].base
        assert all(s.past is not None for s in batch)
        pasts = [s.past for s in batch if s.past is not None]
        lengths = [past[0][0].shape[-2] for past in pasts]
        key = tuple(id(s) for s in batch)
        kept = self._kept.get(key)
        if kept is not None and [past[0][0].data_ptr() for past in pasts] == kept[1]:
            # The same batch as its last pass, each cache still that pass's view: its
            # joined cache goes on as it is, nothing copied.
            cache = kept[0]
            width = cache.layers[0].keys.shape[-2]
        else:
            width = max(lengths)
            # Caches of different lengths are left-padded with zeros to one length; the
            # mask hides the pads and the position ids count only each sequence's own
            # tokens, so every row computes what it would alone.
            layers = [
                (
                    torch.cat([_left_pad(past[j][0], width) for past in pasts]),
                    torch.cat([_left_pad(past[j][1], width) for past in pasts]),
                )
                for j in range(len(pasts[0]))
            ]
            cache = DynamicCache(ddp_cache_data=layers)
        inputs: dict[str, Any] = {
            "input_ids": torch.tensor([[s.ids[-1]] for s in batch], device=base.device),
            "position_ids": torch.tensor([[n] for n in lengths], device=base.device),
            "past_key_values": cache,
            "use_cache": True,
        }
        if min(lengths) != width:
            mask = torch.ones((len(batch), width + 1), dtype=torch.long)
            for row, n in enumerate(lengths):
                mask[row, : width - n] = 0
            inputs["attention_mask"] = mask.to(base.device)
        out = self._run_model(batch, **inputs, **base.extra)
        grown = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        for row, (sequence, n) in enumerate(zip(batch, lengths, strict=True)):
            pad = width - n
            sequence.past = [
                (k[row : row + 1, :, pad:], v[row : row + 1, :, pad:]) for k, v in grown
            ]
        self._kept[key] = (
            out.past_key_values,
            [
                grown[0][0][row : row + 1, :, width - n :].data_ptr()
                for row, n in enumerate(lengths)
            ],
        )
        return out.logits[:, -1]

    def _run_model(self, batch: list[_Sequence], **inputs: Any) -> Any:
        """The model's output on `inputs`, each row under its sequence's adapter (the
        base's rows with no LoRA at all)."""
        base = batch[0].base
        self.forward_passes += 1
        adapters = {s.adapter for s in batch}
        if len(adapters) == 1:
            self._use(base, batch[0].adapter)
            return base.forward(**inputs)
        # Different adapters in one batch: peft's mixed batch, each LoRA layer adding each
        # adapter's product to its own rows only ("__base__": none), as it would alone.
        # peft refuses some adapters (DoRA, for one): then this base's batches are split
        # by adapter from now on.
        if base.enabled is not True:
            base.model.base_model.enable_adapter_layers()
            base.enabled = True
        names = [s.adapter or "__base__" for s in batch]
        if base.mixed is None and not _mixable(base.model, adapters):
            base.mixed = False
        if base.mixed is False:
            raise _Unmixable()
        try:
            out = base.model(**inputs, adapter_names=names)
        except (ValueError, TypeError) as exc:
            _drop_adapter_name_hooks(base.model)
            if base.mixed is not None:
                raise
            log.info("Adapters on %s are not batched together: %s", base.name, exc)
            base.mixed = False
            raise _Unmixable() from exc
        base.mixed = True
        return out

    def _advance(self, sequence: _Sequence, logits: Any) -> FinishReason | None:
        """Choose `sequence`'s next token from `logits`, emit the text it completes; why
        it ended, if so."""
        base = sequence.base
        token = _choose(logits, sequence.request.sampling, sequence.generator)
        finish: FinishReason | None = None
        if token in base.eos:
            finish = "stop"
        else:
            sequence.ids.append(token)
            sequence.request.completion_tokens += 1
            limit = sequence.request.sampling.token_limit
            total = len(sequence.prompt) + len(sequence.ids)
            if (limit is not None and len(sequence.ids) >= limit) or (
                base.context is not None and total >= base.context
            ):
                finish = "length"
        text = base.tokenizer.decode(sequence.ids, skip_special_tokens=True)
        stops = sequence.request.sampling.stop
        cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            text, finish = text[:cut], "stop"
        if finish is None:
            safe = len(text) - _held_back(text, stops)
        else:
            safe = len(text)
        if safe > sequence.sent or finish is not None:
            piece = text[sequence.sent : max(safe, sequence.sent)]
            sequence.sent = max(safe, sequence.sent)
            sequence.request.emit(Piece(sequence.index, piece, finish))
        return finish

    def _finish(self, sequence: _Sequence) -> None:
        request = sequence.request
        request.open_choices -= 1
        if request.open_choices == 0:
            request.emit(Usage(request.prompt_tokens, request.completion_tokens))
            request.emit(None)

    # Loading and evicting.

    def _base(self, spec: BaseModel) -> _Base:
        base = self._bases.get(spec.name)
        if base is None:
            base = self._bases[spec.name] = _load_base(spec)
            self._lru[(spec.name, None)] = base.size
            self._evict(keep=spec.name)
        return base

    def _adapter(self, base: _Base, model: ServedModel) -> str:
        key = adapter_key(model.name)
        if key in base.adapters:
            return key
        assert model.adapter is not None
        started = time.monotonic()
        try:
            if not base.adapters:
                from peft import PeftModel

                base.model = PeftModel.from_pretrained(
                    base.model, model.adapter, adapter_name=key, is_trainable=False
                )
                base.active, base.enabled = key, True
            else:  # loaded beside the others; `_use` activates it
                base.model.load_adapter(model.adapter, adapter_name=key, is_trainable=False)
                base.enabled = None
        except Exception as exc:
            raise ModelUnavailable(f"Could not load the adapter of {model.name}: {exc}") from exc
        base.model.eval()
        base.mixed = None  # whether peft mixes it with the others: tried on its first batch
        size = sum(f.stat().st_size for f in Path(model.adapter).glob("adapter_model.*"))
        base.adapters[key] = model.name
        self._lru[(base.name, key)] = size
        self.adapter_loads += 1
        log.info(
            "Loaded adapter %s on %s in %.3f s (%.1f MiB)",
            model.name,
            base.name,
            time.monotonic() - started,
            size / MiB,
        )
        self._evict(keep=base.name, keep_adapter=key)
        return key

    def _use(self, base: _Base, adapter: str | None) -> None:
        """Put the base's LoRA layers in the state `adapter` needs (off for the base)."""
        if not base.adapters:
            return
        lora = base.model.base_model
        if adapter is None:
            if base.enabled is not False:
                lora.disable_adapter_layers()
                base.enabled = False
            return
        if base.enabled is not True:
            lora.enable_adapter_layers()
            base.enabled = True
        if base.active != adapter:
            base.model.set_adapter(adapter)
            base.active = adapter

    def _touch(self, base: str, adapter: str | None) -> None:
        self._lru.move_to_end((base, None))
        if adapter is not None:
            self._lru.move_to_end((base, adapter))

    def _busy(self, base: str, adapter: str | None) -> bool:
        return any(
            s.base.name == base and (adapter is None or s.adapter == adapter) for s in self._active
        )

    def _evict(self, keep: str, keep_adapter: str | None = None) -> None:
        """Unload least recently used models until what is loaded fits the budget (what
        was just loaded, and what active sequences use, stay: a single model larger than
        the budget is still served, alone)."""
        for base, adapter in list(self._lru):
            if sum(self._lru.values()) <= self._budget:
                return
            if (base, adapter) not in self._lru or self._busy(base, adapter):
                continue
            if adapter is None and base != keep:
                self._unload_base(base)
            elif adapter is not None and adapter != keep_adapter:
                self._unload_adapter(base, adapter)

    def _unload_base(self, name: str) -> None:
        base = self._bases.pop(name)
        for key in [key for key in self._lru if key[0] == name]:
            del self._lru[key]
        del base
        _release_memory()
        log.info("Unloaded base model %s (least recently used)", name)

    def _unload_adapter(self, base_name: str, key: str, why: str = "least recently used") -> None:
        base = self._bases.get(base_name)
        if base is None or key not in base.adapters:
            return
        for sequence in self._active:  # a deleted model stops answering at once
            if sequence.base is base and sequence.adapter == key:
                sequence.request.cancelled = True
                sequence.request.emit(ModelUnavailable(f"The model was {why}."))
        self._active = [s for s in self._active if not s.request.cancelled]
        if len(base.adapters) > 1:
            if base.active == key:
                other = next(k for k in base.adapters if k != key)
                base.model.set_adapter(other)
                base.active = other
            base.model.delete_adapter(key)
        else:
            # peft cannot delete a model's last adapter: take the LoRA layers out instead.
            base.model = base.model.unload()
            base.active = base.enabled = base.mixed = None
        name = base.adapters.pop(key)
        self._lru.pop((base_name, key), None)
        _release_memory()
        log.info("Unloaded adapter %s from %s (%s)", name, base_name, why)


def _mixable(model: Any, adapters: set[str | None]) -> bool:
    """Whether peft can run these adapters in one batch (it refuses DoRA, LoRA on
    parameters and activated LoRA there)."""
    for key in adapters - {None}:
        config = model.peft_config[key]
        if (
            getattr(config, "use_dora", False)
            or getattr(config, "target_parameters", None)
            or getattr(config, "alora_invocation_tokens", None)
        ):
            return False
    return True


def _drop_adapter_name_hooks(model: Any) -> None:
    """Remove the hooks peft registered for a mixed batch whose forward raised: its
    context manager removes them only when the forward returns, and left in place they
    would pass that batch's adapter names to every later forward."""
    from peft.tuners.lora.model import _adapter_names_pre_forward_hook

    for module in model.modules():
        for key, hook in list(module._forward_pre_hooks.items()):
            if getattr(hook, "func", None) is _adapter_names_pre_forward_hook:
                del module._forward_pre_hooks[key]
                module._forward_pre_hooks_with_kwargs.pop(key, None)


def _deliver(items: list[tuple[_Request, Item]]) -> None:
    """On the event loop: put each item in its request's queue."""
    for request, item in items:
        request.outputs.put_nowait(item)


class _Unmixable(Exception):
    """peft cannot run these adapters in one batch: run them one adapter at a time."""


def _left_pad(tensor: Any, width: int) -> Any:
    """A (1, heads, length, dim) cache tensor with zeros before it up to `width` long."""
    import torch

    missing = width - tensor.shape[-2]
    if not missing:
        return tensor
    return torch.nn.functional.pad(tensor, (0, 0, missing, 0))


def _as_error(exc: Exception) -> BaseException:
    if isinstance(exc, OpenFTError):
        return exc
    return ModelUnavailable(f"Generation failed: {type(exc).__name__}: {exc}")


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters to hold back: the replacement characters of an
    incomplete UTF-8 character, or the start of a stop sequence that the next tokens may
    complete."""
    held = len(text) - len(text.rstrip("\ufffd"))
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                held = max(held, size)
                break
    return held


def _choose(logits: Any, sampling: Sampling, generator: Any) -> int:
    import torch

    if sampling.temperature == 0:
        return int(torch.argmax(logits))
    # In float64 (where a temperature of 1e-300 is not 0), the largest logit subtracted
    # before dividing: a tiny temperature then sends the others to -inf (greedy in the
    # limit), never 0/0 or inf - inf = NaN.
    scores = logits.double()
    probs = torch.softmax((scores - scores.max()) / sampling.temperature, dim=-1)
    if sampling.top_p < 1:
        ordered, order = probs.sort(descending=True)
        # Keep the most likely tokens until their mass reaches top_p (at least one).
        ordered[(ordered.cumsum(0) - ordered) >= sampling.top_p] = 0
        probs = torch.zeros_like(probs).scatter(0, order, ordered)
    return int(torch.multinomial(probs, 1, generator=generator))


def _load_base(spec: BaseModel) -> _Base:
    started = time.monotonic()
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ModelUnavailable(
            f"Serving needs the train extra on this node (pip install 'openft[train]'): {exc}"
        ) from exc
    local = Path(spec.source).is_dir()
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec.source, local_files_only=local)
        model = AutoModelForCausalLM.from_pretrained(
            spec.source, local_files_only=local, dtype=dtype
        )
    except Exception as exc:
        raise ModelUnavailable(
            f"Could not load the base model {spec.name!r} from {spec.source!r}: {exc}"
        ) from exc
    model = model.to("cuda" if cuda else "cpu").eval()  # type: ignore[arg-type]
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE  # as the trainer does
    eos = model.generation_config.eos_token_id if model.generation_config else None
    eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        eos_ids.add(tokenizer.eos_token_id)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    log.info(
        "Loaded base model %s from %s in %.2f s on %s (%.1f MiB)",
        spec.name,
        spec.source,
        time.monotonic() - started,
        model.device,
        size / MiB,
    )
    takes = inspect.signature(model.forward).parameters
    return _Base(
        spec.name,
        model,
        tokenizer,
        frozenset(eos_ids),
        getattr(model.config, "max_position_embeddings", None),
        size,
        model.device,
        {"logits_to_keep": 1} if "logits_to_keep" in takes else {},
    )


def _release_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
