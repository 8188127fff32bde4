"""Decoding on the embedded engine: the forward passes that advance its sequences, a
batch of them at a time, and the choice of each one's next token.

Prompts are run in one forward pass per batch (`prefill`), the next tokens of running
sequences in another (`decode`): each sequence keeps its own KV cache, and a batch's caches
are left-padded and joined for its pass (the joined cache kept for the same batch's next
pass, nothing copied). A batch of sequences on different adapters of one base runs as
peft's mixed batch (`adapter_names`), or one adapter at a time where peft refuses them.
`advance` samples a token (`_choose`) and emits the text it completes, holding back what a
stop string or an incomplete character may still change.
"""

from __future__ import annotations

import logging
from typing import Any

from openft.domain.chat import Sampling
from openft.serving.interface import FinishReason, Piece
from openft.serving.sequences import Sequence

log = logging.getLogger(__name__)


class Decoder:
    """The forward passes of one engine (on its scheduler thread alone)."""

    def __init__(self) -> None:
        # The joined KV cache of each batch decoded in the last turn (by its sequences'
        # ids), with where each sequence's cache began in it (see `decode`).
        self._kept: dict[tuple[int, ...], tuple[Any, list[int]]] = {}
        # Forward passes run (each for a batch of sequences): read by tests and benchmarks.
        self.forward_passes = 0

    def keep(self, decoded: set[tuple[int, ...]], running: set[int]) -> None:
        """Keep joined caches for the next turn's same batches only (`decoded` this turn),
        and only while all their sequences run."""
        self._kept = {k: v for k, v in self._kept.items() if k in decoded and running.issuperset(k)}

    def prefill(self, batch: list[Sequence]) -> Any:
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
        # A plain cache (full attention in every layer) that `decode` can pad and join.
        cache = DynamicCache()
        out = self._run_model(
            batch, input_ids=ids.to(base.device), past_key_values=cache, use_cache=True, **extra
        )
        layers = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        for row, (sequence, n) in enumerate(zip(batch, lengths, strict=True)):
            sequence.past = [(k[row : row + 1, :, :n], v[row : row + 1, :, :n]) for k, v in layers]
        return out.logits[torch.arange(len(batch)), torch.tensor(columns)]

    def decode(self, batch: list[Sequence]) -> Any:
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

    def _run_model(self, batch: list[Sequence], **inputs: Any) -> Any:
        """The model's output on `inputs`, each row under its sequence's adapter (the
        base's rows with no LoRA at all)."""
        base = batch[0].base
        self.forward_passes += 1
        adapters = {s.adapter for s in batch}
        if len(adapters) == 1:
            base.use(batch[0].adapter)
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
            raise Unmixable()
        rows = base.mixed_rows
        if rows is None:
            rows = base.mixed_rows = _MixedRows(base.model)
        rows.running(names)
        try:
            out = base.forward(**inputs)
        except (ValueError, TypeError) as exc:
            if base.mixed is not None:
                raise
            log.info("Adapters on %s are not batched together: %s", base.name, exc)
            base.mixed = False
            raise Unmixable() from exc
        finally:
            rows.running(None)
        base.mixed = True
        return out

    def advance(self, sequence: Sequence, logits: Any) -> FinishReason | None:
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


class Unmixable(Exception):
    """peft cannot run these adapters in one batch: run them one adapter at a time."""


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


class _MixedRows:
    """What peft's `adapter_names` argument does, without its cost on every pass.

    peft's forward walks every module of the model to register a hook that passes the
    batch's adapter names (one a row) to each LoRA layer, and removes them after; each
    layer then picks each adapter's rows with a list of indices (a copy in, a scatter
    back). On a small model that is most of a mixed pass. These hooks are registered once
    per base and its adapters (`LoadedBase.mixed_rows`, dropped when an adapter is loaded
    or unloaded) and act only while a mixed batch runs (`running`):

    - plain LoRA on linear layers (what the trainer makes): each layer computes the base
      rows as peft's mixed forward does (every row `__base__`), and a hook after it adds
      each adapter's product to its rows, the batch's rows being grouped by adapter
      (runs of one adapter: slices, views rather than copies), as peft's vanilla
      `_mixed_batch_forward` computes it, in the same order;
    - anything else (LoRA variants, embeddings, convolutions, modules to save): the
      names are passed to peft's layers as its own hooks pass them.

    peft's checks still run in each layer (and its refusals raise), as before."""

    def __init__(self, model: Any) -> None:
        from peft.tuners.lora import LoraLayer
        from peft.tuners.lora.layer import Linear
        from peft.utils.other import AuxiliaryTrainingWrapper

        layers: list[Any] = [
            m for m in model.modules() if isinstance(m, (LoraLayer, AuxiliaryTrainingWrapper))
        ]
        self._plain = not model.training and all(
            type(m) is Linear and not m.lora_variant for m in layers
        )
        # The adapter of each row of the batch running now ("__base__": none), and its runs
        # (adapter, first row, end); None between mixed passes (a pass on one adapter
        # alone leaves the layers as they are).
        self._names: list[str] | None = None
        self._base_rows: list[str] = []
        self._runs: list[tuple[str, int, int]] = []
        self._handles = [
            m.register_forward_pre_hook(self._pass_names, with_kwargs=True) for m in layers
        ]
        if self._plain:
            self._handles += [m.register_forward_hook(self._add_rows) for m in layers]

    def running(self, names: list[str] | None) -> None:
        """The adapter of each row of the mixed batch about to run; None after it."""
        self._names = names
        self._runs = []
        if names is None:
            return
        self._base_rows = ["__base__"] * len(names)
        start = 0
        for row in range(1, len(names) + 1):
            if row == len(names) or names[row] != names[start]:
                self._runs.append((names[start], start, row))
                start = row

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    def _pass_names(
        self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        if self._names is None:
            return None
        # Plain layers compute the base rows here and `_add_rows` the adapters' (it takes
        # the input as the first positional argument, as transformers passes it).
        kwargs["adapter_names"] = self._base_rows if self._plain and args else self._names
        return args, kwargs

    def _add_rows(self, module: Any, args: tuple[Any, ...], result: Any) -> None:
        if self._names is None or not args:
            return
        x = args[0]
        for adapter, start, end in self._runs:
            if adapter == "__base__" or adapter not in module.lora_A:
                continue
            lora_a = module.lora_A[adapter]
            rows = x[start:end].to(lora_a.weight.dtype)
            product = module.lora_B[adapter](lora_a(module.lora_dropout[adapter](rows)))
            result[start:end] += (product * module.scaling[adapter]).to(result.dtype)


def _left_pad(tensor: Any, width: int) -> Any:
    """A (1, heads, length, dim) cache tensor with zeros before it up to `width` long."""
    import torch

    missing = width - tensor.shape[-2]
    if not missing:
        return tensor
    return torch.nn.functional.pad(tensor, (0, 0, missing, 0))


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
