"""What the embedded engine holds in memory: one copy of each base model, loaded on first
use, with every LoRA adapter asked for loaded onto it (peft's multi-adapter model), and the
least recently used adapters and bases unloaded when what is loaded outgrows the memory
budget. Runs on the engine's scheduler thread alone, as everything that touches torch.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openft.domain.entities import BaseModel, ServedModel
from openft.domain.errors import ModelUnavailable
from openft.models import loading

log = logging.getLogger(__name__)

MiB = 1024 * 1024


def adapter_key(model_name: str) -> str:
    """peft's name for an adapter (a module attribute: no dots or colons)."""
    return "ft_" + hashlib.sha256(model_name.encode()).hexdigest()[:20]


@dataclass
class LoadedBase:
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
    # Whether peft runs this base's adapters together in one batch (None: not tried yet),
    # and the hooks that run its mixed batches (`decoding._MixedRows`), made on the first.
    mixed: bool | None = None
    mixed_rows: Any = None

    def adapters_changed(self) -> None:
        """An adapter was loaded or unloaded: whether they mix is to be found out again,
        and the mixed-batch hooks are made again for the LoRA layers there are now."""
        self.mixed = None
        if self.mixed_rows is not None:
            self.mixed_rows.remove()
            self.mixed_rows = None

    @property
    def forward(self) -> Any:
        """The transformers model to run: inside peft's wrapper (whose forward adds
        Python work to every step), with the LoRA layers peft put in it."""
        return self.model.get_base_model() if self.adapters else self.model

    def use(self, adapter: str | None) -> None:
        """Put the LoRA layers in the state `adapter` needs (off for the base)."""
        if not self.adapters:
            return
        lora = self.model.base_model
        if adapter is None:
            if self.enabled is not False:
                lora.disable_adapter_layers()
                self.enabled = False
            return
        if self.enabled is not True:
            lora.enable_adapter_layers()
            self.enabled = True
        if self.active != adapter:
            self.model.set_adapter(adapter)
            self.active = adapter


class Residency:
    """The loaded bases and adapters, and their LRU order under the memory budget.

    The engine says which models its active sequences use (`busy`: those stay loaded),
    and is told before an adapter is unloaded (`dropping`: it stops the sequences that
    use it)."""

    def __init__(
        self,
        budget: int,
        busy: Callable[[str, str | None], bool],
        dropping: Callable[[LoadedBase, str, str], None],
    ) -> None:
        self._budget = budget
        self._busy = busy
        self._dropping = dropping
        self.bases: dict[str, LoadedBase] = {}
        # What is loaded, least recently used first: (base, None) for a base model,
        # (base, adapter) for an adapter on it; the values are sizes in bytes.
        self._lru: OrderedDict[tuple[str, str | None], int] = OrderedDict()
        # Written by the scheduler thread alone; read (a whole int) by the metrics.
        self.adapter_loads = 0

    def base(self, spec: BaseModel) -> LoadedBase:
        base = self.bases.get(spec.name)
        if base is None:
            base = self.bases[spec.name] = load_base(spec)
            self._lru[(spec.name, None)] = base.size
            self._evict(keep=spec.name)
        return base

    def adapter(self, base: LoadedBase, model: ServedModel) -> str:
        """peft's name of `model`'s adapter on `base`, loaded there if it is not yet."""
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
            else:  # loaded beside the others; `LoadedBase.use` activates it
                base.model.load_adapter(model.adapter, adapter_name=key, is_trainable=False)
                base.enabled = None
        except Exception as exc:
            raise ModelUnavailable(f"Could not load the adapter of {model.name}: {exc}") from exc
        base.model.eval()
        base.adapters_changed()  # whether peft mixes it with the others: on its first batch
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

    def touch(self, base: str, adapter: str | None) -> None:
        """Mark a base (and an adapter on it) as the most recently used."""
        self._lru.move_to_end((base, None))
        if adapter is not None:
            self._lru.move_to_end((base, adapter))

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
                self.unload_adapter(base, adapter)

    def _unload_base(self, name: str) -> None:
        base = self.bases.pop(name)
        for key in [key for key in self._lru if key[0] == name]:
            del self._lru[key]
        del base
        _release_memory()
        log.info("Unloaded base model %s (least recently used)", name)

    def unload_adapter(self, base_name: str, key: str, why: str = "least recently used") -> None:
        base = self.bases.get(base_name)
        if base is None or key not in base.adapters:
            return
        self._dropping(base, key, why)
        if len(base.adapters) > 1:
            if base.active == key:
                other = next(k for k in base.adapters if k != key)
                base.model.set_adapter(other)
                base.active = other
            base.model.delete_adapter(key)
        else:
            # peft cannot delete a model's last adapter: take the LoRA layers out instead.
            base.model = base.model.unload()
            base.active = base.enabled = None
        base.adapters_changed()
        name = base.adapters.pop(key)
        self._lru.pop((base_name, key), None)
        _release_memory()
        log.info("Unloaded adapter %s from %s (%s)", name, base_name, why)


def load_base(spec: BaseModel) -> LoadedBase:
    started = time.monotonic()
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401
    except ImportError as exc:
        raise ModelUnavailable(
            f"Serving needs the train extra on this node (pip install 'openft[train]'): {exc}"
        ) from exc
    cuda = torch.cuda.is_available()
    try:
        tokenizer = loading.load_tokenizer(spec.source)
        model = loading.load_model(spec.source)
    except Exception as exc:
        raise ModelUnavailable(
            f"Could not load the base model {spec.name!r} from {spec.source!r}: {exc}"
        ) from exc
    model = model.to("cuda" if cuda else "cpu").eval()
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
    return LoadedBase(
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
