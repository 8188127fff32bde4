"""The embedded engine in this process, on the tiny model with random LoRA adapters:
a closed stream stops its generation, requests take turns, and adapters are evicted
least recently used under the memory budget and reloaded when asked for again."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from openft.domain.chat import ChatMessage, Sampling
from openft.domain.entities import BaseModel, ServedModel
from openft.domain.errors import InvalidRequest
from openft.serving.interface import Output, Piece, Usage
from openft.serving.local import TURN_QUOTA, LocalEngine

HELLO = [ChatMessage("user", "hello")]
GREEDY_LONG = Sampling(max_tokens=300, temperature=0)


def random_adapter(base: Path, target: Path, seed: int, dora: bool = False) -> Path:
    """A LoRA adapter with random (not zero) weights: it changes the base's answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(
        r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, use_dora=dora
    )
    get_peft_model(model, config).save_pretrained(str(target))
    return target


@pytest.fixture(scope="module")
def adapters(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> list[ServedModel]:
    root = tmp_path_factory.mktemp("adapters")
    base = BaseModel("tiny", str(tiny_model))
    return [
        ServedModel(
            f"ft:tiny:p::ftjob-{n}", base, str(random_adapter(tiny_model, root / f"a{n}", n))
        )
        for n in range(3)
    ]


async def collect(outputs: AsyncIterator[Output]) -> tuple[str, Usage]:
    text, usage = "", None
    async for output in outputs:
        if isinstance(output, Piece):
            text += output.text
        else:
            usage = output
    assert usage is not None
    return text, usage


async def test_closing_a_stream_stops_its_generation(tiny_model: Path) -> None:
    engine = LocalEngine(memory_budget_bytes=1 << 30)
    base = ServedModel("tiny", BaseModel("tiny", str(tiny_model)))
    try:
        outputs = engine.generate(base, HELLO, GREEDY_LONG)
        first = await anext(outputs)
        assert isinstance(first, Piece)
        assert engine.active_sequences == 1
        await outputs.aclose()  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10
        while engine.active_sequences and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert engine.active_sequences == 0
    finally:
        await engine.aclose()


async def test_a_short_request_is_not_held_up_by_a_long_one(tiny_model: Path) -> None:
    engine = LocalEngine(memory_budget_bytes=1 << 30)
    base = ServedModel("tiny", BaseModel("tiny", str(tiny_model)))
    finished: list[str] = []

    async def run(name: str, sampling: Sampling) -> None:
        await collect(engine.generate(base, HELLO, sampling))
        finished.append(name)

    try:
        await collect(engine.generate(base, HELLO, Sampling(max_tokens=1)))  # loads the model
        long = asyncio.create_task(run("long", Sampling(max_tokens=300, temperature=1, seed=1)))
        await asyncio.sleep(0.05)
        await run("short", Sampling(max_tokens=3, temperature=1, seed=2))
        await long
        assert finished == ["short", "long"]
    finally:
        await engine.aclose()


async def test_adapters_are_evicted_least_recently_used_and_reloaded(
    adapters: list[ServedModel], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="openft.serving")
    # Room for the base and two of the three adapters.
    sizes = [
        sum(f.stat().st_size for f in Path(a.adapter or "").glob("adapter_model.*"))
        for a in adapters
    ]
    base_bytes = sum(f.stat().st_size for f in Path(adapters[0].base.source).glob("*.safetensors"))
    engine = LocalEngine(memory_budget_bytes=base_bytes + sizes[0] + sizes[1] + sizes[2] // 2)
    quick = Sampling(max_tokens=8, temperature=0)
    try:
        first = [await collect(engine.generate(a, HELLO, quick)) for a in adapters[:2]]
        assert "Unloaded adapter" not in caplog.text
        await collect(engine.generate(adapters[2], HELLO, quick))
        assert f"Unloaded adapter {adapters[0].name} from tiny (least recently used)" in caplog.text
        again = await collect(engine.generate(adapters[0], HELLO, quick))
        assert again == first[0]  # reloaded, it answers as before
        assert caplog.text.count(f"Loaded adapter {adapters[0].name} on tiny") == 2
        assert caplog.text.count("Loaded base model tiny") == 1
        # Different adapters give different answers: each request used its own.
        assert first[0][0] != first[1][0]
    finally:
        await engine.aclose()


async def test_turns_are_shared_fairly_between_projects(tiny_model: Path) -> None:
    # A full engine (room for 4 sequences) running one project's 16 choices still starts
    # another project's request, and gives it its turns: its first token comes after a
    # few of the big request's, not after all of them.
    engine = LocalEngine(memory_budget_bytes=1 << 30, max_active=4)
    base = ServedModel("tiny", BaseModel("tiny", str(tiny_model)))
    order: list[str] = []

    async def run(tenant: str, sampling: Sampling) -> None:
        async for output in engine.generate(base, HELLO, sampling, tenant=tenant):
            if isinstance(output, Piece):
                order.append(tenant)

    try:
        await collect(engine.generate(base, HELLO, Sampling(max_tokens=1)))  # loads the model
        big = asyncio.create_task(
            run("proj_a", Sampling(max_tokens=60, n=16, temperature=1, seed=1))
        )
        while "proj_a" not in order:
            await asyncio.sleep(0.005)
        # Counted from B's sending: turns are fast (a batch each), so A's choices may take
        # several while this test sleeps.
        sent = len(order)
        await run("proj_b", Sampling(max_tokens=3, temperature=1, seed=2))
        await big
    finally:
        await engine.aclose()
    before_b = order.index("proj_b") - sent
    # Admitted at the next turn; each turn decodes at most TURN_QUOTA of A's choices.
    assert before_b <= 3 * TURN_QUOTA, before_b
    last_b = len(order) - 1 - order[::-1].index("proj_b")
    assert last_b < len(order) - 16  # B was done long before A's 16 choices were


async def test_a_prompt_longer_than_any_context_is_refused_untokenized(tiny_model: Path) -> None:
    engine = LocalEngine(memory_budget_bytes=1 << 30)
    base = ServedModel("tiny", BaseModel("tiny", str(tiny_model)))
    try:
        await collect(engine.generate(base, HELLO, Sampling(max_tokens=1)))  # loads the model
        huge = [ChatMessage("user", "x" * 10_000_000)]
        with pytest.raises(InvalidRequest, match="characters") as caught:
            await collect(engine.generate(base, huge, Sampling(max_tokens=1)))
        assert caught.value.code == "context_length_exceeded"
    finally:
        await engine.aclose()


async def together_and_alone(
    engine: LocalEngine, asks: list[tuple[ServedModel, list[ChatMessage]]], sampling: Sampling
) -> tuple[list[tuple[str, Usage]], list[tuple[str, Usage]], int]:
    """Each request's answer alone, then all of them admitted together in one turn, and
    the forward passes that took."""
    alone = [await collect(engine.generate(m, messages, sampling)) for m, messages in asks]
    # Hold the scheduler until all are submitted: they are admitted together.
    hold = threading.Event()

    def wait() -> None:
        hold.wait()

    engine._submit(wait)
    runs = [asyncio.ensure_future(collect(engine.generate(m, msgs, sampling))) for m, msgs in asks]
    deadline = time.monotonic() + 10
    while engine._inbox.qsize() < len(asks) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    passes = engine.forward_passes
    hold.set()
    together = await asyncio.gather(*runs)
    return alone, together, engine.forward_passes - passes


async def test_a_batch_answers_as_each_request_alone(adapters: list[ServedModel]) -> None:
    # Greedy answers of the base and two adapters, prompts of different lengths (so the
    # batch is padded) and n=2, are the same tokens admitted together (one batch: its
    # prompts in one forward pass, then one pass per token for all of them) as alone.
    engine = LocalEngine(memory_budget_bytes=1 << 30)
    base = ServedModel("tiny", adapters[0].base)
    asks = [
        (base, [ChatMessage("user", "hello")]),
        (adapters[0], [ChatMessage("system", "Be brief."), ChatMessage("user", "hi there")]),
        (adapters[1], [ChatMessage("user", "a much longer question than the others, surely")]),
        (base, [ChatMessage("user", "one more, for the base")]),
    ]
    greedy = Sampling(max_tokens=12, temperature=0, n=2)
    try:
        alone, together, passes = await together_and_alone(engine, asks, greedy)
        # One batch, not one pass per sequence: a prefill, 11 decodes, and at most one
        # more for those whose first token gave no text yet (`LocalEngine._turn`).
        assert passes <= 13
    finally:
        await engine.aclose()
    assert together == alone
    texts = {text for text, _ in alone}
    assert len(texts) >= 3  # the adapters changed the answers: each row used its own


async def test_adapters_peft_cannot_mix_are_batched_one_adapter_at_a_time(
    adapters: list[ServedModel], tmp_path: Path
) -> None:
    # peft refuses DoRA adapters in a mixed batch: the engine then runs one batch per
    # adapter on that base, and the answers are still each request's alone.
    source = Path(adapters[0].base.source)
    dora = ServedModel(
        "ft:tiny:p::ftjob-dora",
        adapters[0].base,
        str(random_adapter(source, tmp_path / "dora", 7, dora=True)),
    )
    engine = LocalEngine(memory_budget_bytes=1 << 30)
    asks = [
        (dora, [ChatMessage("user", "hello")]),
        (adapters[0], [ChatMessage("user", "hello there, adapter")]),
        (ServedModel("tiny", adapters[0].base), [ChatMessage("user", "hi")]),
    ]
    try:
        alone, together, passes = await together_and_alone(
            engine, asks, Sampling(max_tokens=6, temperature=0)
        )
    finally:
        await engine.aclose()
    # Not one batch (a pass a token, one more for an end-of-turn token): one per adapter.
    assert passes > max(usage.completion_tokens for _, usage in together) + 1
    assert together == alone
    assert len({text for text, _ in alone}) == 3


@pytest.mark.parametrize("embedding", [False, True])
def test_mixed_batches_compute_what_peft_computes(tiny_model: Path, embedding: bool) -> None:
    # The engine's mixed-batch hooks (registered once, rows of one adapter as one slice)
    # give the logits peft's own `adapter_names` gives, rows of the base and of two
    # adapters interleaved; with LoRA on the embeddings too, peft's layers do the rows.
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from openft.serving.decoding import _MixedRows

    targets = ["q_proj", "v_proj"] + (["embed_tokens"] if embedding else [])
    model: PeftModel | None = None
    for n in range(2):
        torch.manual_seed(n)
        config = LoraConfig(r=4, target_modules=targets, init_lora_weights=False)
        if model is None:
            model = get_peft_model(
                AutoModelForCausalLM.from_pretrained(tiny_model), config, f"a{n}"
            )
        else:
            model.add_adapter(f"a{n}", config)
    assert model is not None
    model.eval()
    names = ["a1", "__base__", "a0", "a1", "a0"]
    ids = torch.randint(0, 50, (len(names), 7), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        expected = model(input_ids=ids, adapter_names=names).logits
        rows = _MixedRows(model)
        assert rows._plain is not embedding  # both ways of running the rows are checked
        rows.running(names)
        got = model.get_base_model()(input_ids=ids).logits
        rows.running(None)
        assert torch.allclose(got, expected, atol=1e-6, rtol=0)
        # Between mixed passes the hooks change nothing.
        model.set_adapter("a0")
        alone = model.get_base_model()(input_ids=ids).logits
        rows.remove()
        assert torch.equal(alone, model.get_base_model()(input_ids=ids).logits)
    assert not torch.allclose(expected[0], model.get_base_model()(input_ids=ids).logits[0])
