"""A tiny causal LM built locally: random weights from a config and a tokenizer trained on
local text. Nothing is downloaded. Tests and `openft demo` fine-tune it; users point
openft at real models (a Hugging Face id or a local directory) instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from openft.domain.chat_template import CHAT_TEMPLATE

SPECIAL = ["<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CORPUS = """
The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a
single step. What is the capital of France? Paris is the capital of France. What is two
plus two? Four. Answer briefly. You are a helpful assistant. The answer is yes. The answer
is no. Red, green and blue are colours. One, two, three, four, five, six, seven, eight,
nine, ten. Questions and answers, prompts and completions, users and assistants.
"""


def build_tiny_model(
    directory: Path,
    texts: Iterable[str] = (),
    *,
    vocab_size: int = 384,
    hidden_size: int = 64,
    layers: int = 2,
    seed: int = 0,
) -> Path:
    """Write a randomly initialised Llama-style model and its tokenizer to `directory`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    raw = Tokenizer(models.BPE(unk_token=None))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    raw.train_from_iterator([CORPUS, *texts], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=raw,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = 512
    tokenizer.save_pretrained(directory)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        # Larger than Llama's 0.02 so the untrained model's logits are not all but
        # uniform: LoRA then has a signal to adapt within a few dozen steps.
        initializer_range=0.2,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory
