"""Loading a base model and its tokenizer from a Hugging Face id or a local directory: the
one way the trainer and the embedded serving engine both do it.

A local directory is read as it is (`local_files_only`: no call to the Hub); the weights
are bfloat16 on a GPU that has it, else float32; a tokenizer without a chat template gets
openft's (`domain.chat_template`), so that training and serving render a conversation
alike. Errors are the callers' to translate (each into its own: a job's failure, a 503).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from openft.domain.chat_template import CHAT_TEMPLATE


def dtype() -> Any:
    """The weights' dtype: bfloat16 on a GPU that has it, else float32."""
    import torch

    cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return torch.bfloat16 if cuda_bf16 else torch.float32


def load_tokenizer(source: str) -> Any:
    """`source`'s tokenizer, with openft's chat template where it has none."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=Path(source).is_dir())
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def load_model(source: str) -> Any:
    """`source`'s causal language model in `dtype()`, where transformers puts it (the
    caller moves it, or a trainer shards it)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        source, local_files_only=Path(source).is_dir(), dtype=dtype()
    )
