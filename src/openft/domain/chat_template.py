"""The chat template given to a tokenizer that has none of its own: the trainer trains with
it, so the server must render prompts with it too."""

from __future__ import annotations

# ChatML: simple, prefix-consistent, and what many open models use.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
