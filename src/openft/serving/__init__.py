"""Serving what was trained: chat completions on base models with LoRA adapters on top.

`interface` (no torch) is what services see; `local` runs transformers + peft in this
process, `vllm` forwards to a vLLM server. Beside `training`, the only torch importers.
"""
