"""Sample training files in OpenAI's formats."""

from __future__ import annotations

import json


def chat_line(i: int, *, weight: int | None = None) -> str:
    assistant: dict[str, object] = {"role": "assistant", "content": f"answer {i}"}
    if weight is not None:
        assistant["weight"] = weight
    return json.dumps(
        {
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": f"question {i}"},
                assistant,
            ]
        }
    )


def preference_line(i: int) -> str:
    return json.dumps(
        {
            "input": {"messages": [{"role": "user", "content": f"question {i}"}]},
            "preferred_output": [{"role": "assistant", "content": f"good {i}"}],
            "non_preferred_output": [{"role": "assistant", "content": f"bad {i}"}],
        }
    )


def chat_file(n: int = 12) -> bytes:
    return ("\n".join(chat_line(i) for i in range(n)) + "\n").encode()


def preference_file(n: int = 12) -> bytes:
    return ("\n".join(preference_line(i) for i in range(n)) + "\n").encode()


def toy_chat_file(n: int = 16) -> bytes:
    """A learnable toy task: four questions, each always with the same answer."""
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"question {i % 4}"},
                    {"role": "assistant", "content": f"answer {i % 4}"},
                ]
            }
        )
        for i in range(n)
    ]
    return ("\n".join(lines) + "\n").encode()


REPEAT_WORDS = ("apple", "river", "stone", "cloud", "green", "seven", "night", "bread")


def repeat_example(word: str, times: int = 3) -> tuple[str, str]:
    """A small pattern a tiny model learns in seconds: "repeat X" answers "X X X"."""
    return f"repeat {word}", " ".join([word] * times)


def repeat_file(words: tuple[str, ...] = REPEAT_WORDS, times: int = 3, copies: int = 2) -> bytes:
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
        for _ in range(copies)
        for prompt, answer in (repeat_example(word, times) for word in words)
    ]
    return ("\n".join(lines) + "\n").encode()
