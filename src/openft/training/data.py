"""Turn validated JSONL files into what TRL trains on.

Chat examples are tokenized here, not by TRL, so that the loss covers exactly the
assistant messages whose `weight` is not 0: every other token gets the label -100.
Preference examples become TRL's conversational `prompt` / `chosen` / `rejected`.
Reinforcement examples become a conversational `prompt` and the row's other fields, the
grader's `item`, as one JSON text (a column of any shape, whatever the rows hold).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from openft.domain.errors import InvalidFile

IGNORE = -100


def read_jsonl(path: Path, label: str) -> Iterator[dict[str, Any]]:
    """The examples of a file, with a clear error naming the line if one is unreadable."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise InvalidFile(
                    f"Invalid file {label}, line {number}: {exc}.", param="file"
                ) from None
            if not isinstance(value, dict):
                raise InvalidFile(
                    f"Invalid file {label}, line {number}: not an object.", param="file"
                )
            yield value


def _ids(rendered: Any) -> list[int]:
    # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True).
    if hasattr(rendered, "keys"):
        rendered = rendered["input_ids"]
    return list(rendered)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def tokenize_chat(tokenizer: Any, example: dict[str, Any], max_length: int) -> dict[str, list[int]]:
    """input_ids and labels of one chat example, with the loss on trainable assistant turns.

    The conversation is rendered with the model's chat template one message at a time;
    the tokens each message adds are trainable only for an assistant message of weight 1
    (its role header, rendered as the generation prompt, never is)."""
    messages = example["messages"]
    tools = example.get("tools")
    input_ids: list[int] = []
    labels: list[int] = []

    def extend(rendered: list[int], trainable: bool) -> None:
        start = _common_prefix(input_ids, rendered)
        del input_ids[start:], labels[start:]
        new = rendered[start:]
        input_ids.extend(new)
        labels.extend(new if trainable else [IGNORE] * len(new))

    for index, message in enumerate(messages):
        assistant = message.get("role") == "assistant"
        if assistant and index > 0:
            head = tokenizer.apply_chat_template(
                messages[:index], tools=tools, tokenize=True, add_generation_prompt=True
            )
            extend(_ids(head), trainable=False)
        full = tokenizer.apply_chat_template(messages[: index + 1], tools=tools, tokenize=True)
        extend(_ids(full), trainable=assistant and message.get("weight", 1) == 1)
    return {"input_ids": input_ids[:max_length], "labels": labels[:max_length]}


def chat_dataset(
    tokenizer: Any, path: Path, label: str, max_length: int
) -> list[dict[str, list[int]]]:
    rows = []
    for example in read_jsonl(path, label):
        row = tokenize_chat(tokenizer, example, max_length)
        if any(token != IGNORE for token in row["labels"]):
            rows.append(row)
    if not rows:
        raise InvalidFile(
            f"Invalid file {label}: no example has an assistant token left to train on "
            f"within max_length={max_length}.",
            param="file",
        )
    return rows


def preference_dataset(path: Path, label: str) -> list[dict[str, Any]]:
    return [
        {
            "prompt": example["input"]["messages"],
            "chosen": example["preferred_output"],
            "rejected": example["non_preferred_output"],
        }
        for example in read_jsonl(path, label)
    ]


ITEM_COLUMN = "openft_item"


def _text(content: Any) -> str:
    """A message's content as text: content parts' texts joined (a text model's prompt)."""
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def prompt_dataset(path: Path, label: str) -> list[dict[str, Any]]:
    """Rows for GRPO: `prompt` (the messages, ending with the user's) and the item.

    Each message becomes `role` and text `content`: one shape for every row, as the
    dataset's columnar storage needs (a string in one row and content parts in another
    cannot share a column)."""
    return [
        {
            "prompt": [
                {"role": str(m.get("role")), "content": _text(m.get("content"))}
                for m in example["messages"]
            ],
            ITEM_COLUMN: json.dumps({k: v for k, v in example.items() if k != "messages"}),
        }
        for example in read_jsonl(path, label)
    ]
