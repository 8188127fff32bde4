"""Serving what was trained: chat completions on base models with LoRA adapters on top.

`interface` (no torch) is what services see; `local` runs transformers + peft in this
process (its scheduler; `residency` holds the models, `decoding` runs them, `sequences`
are what the two share), `vllm` forwards to a vLLM server. Beside `training` (and the
model loading both use, `openft.models`), the only torch importers.
"""
