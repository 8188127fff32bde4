"""`string_check`: 1 when the comparison holds, else 0 (OpenAI's four operations)."""

from __future__ import annotations


def string_check(operation: str, text: str, reference: str) -> float:
    """`like` is "contains": the input holds the reference; `ilike` ignores case."""
    if operation == "eq":
        return float(text == reference)
    if operation == "ne":
        return float(text != reference)
    if operation == "like":
        return float(reference in text)
    if operation == "ilike":
        return float(reference.casefold() in text.casefold())
    raise ValueError(f"unknown string_check operation {operation!r}")
