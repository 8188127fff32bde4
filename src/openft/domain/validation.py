"""Validation of fine-tuning JSONL files, one line at a time so a file is never held whole.

Two formats are accepted (OpenAI's):
- chat: ``{"messages": [...]}`` with system/developer/user/assistant/tool roles, and an
  optional ``weight`` of 0 or 1 on assistant messages; other keys are kept (a
  reinforcement job's grader reads them as ``item``);
- preference (DPO): ``{"input": {"messages": [...]}, "preferred_output": [...],
  "non_preferred_output": [...]}`` whose outputs are assistant messages.

Every line of a file must be in the same format. Blank lines are skipped.

Which method a chat file serves is only known when a job uses it, so an upload checks the
format alone, and a job's validation adds its method's rules (`MethodRules`): supervised
needs an assistant message to learn from; reinforcement needs a prompt (the last message
a user's) and every ``item.…`` field its grader reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from openft.domain.entities import FileFormat, MethodType
from openft.domain.errors import InvalidFile

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_ERROR_VALUE_CHARS = 80


class LineError(Exception):
    """What is wrong with one line; `FileValidator` adds the line number."""


@dataclass(frozen=True, slots=True)
class FileReport:
    format: FileFormat
    examples: int


def _check_content(message: dict[str, Any], where: str) -> None:
    content = message.get("content")
    if content is None:
        if message.get("role") == "assistant" and (
            message.get("tool_calls") or message.get("function_call")
        ):
            return
        raise LineError(f"{where} has no content")
    if isinstance(content, str):
        return
    if isinstance(content, list) and all(isinstance(part, dict) for part in content):
        return
    raise LineError(f"{where} content must be a string or a list of content parts")


def _check_messages(messages: Any, where: str, *, assistant_only: bool = False) -> int:
    """Check a list of messages; return how many are assistant messages."""
    if not isinstance(messages, list) or not messages:
        raise LineError(f"{where} must be a non-empty list of messages")
    assistants = 0
    for index, message in enumerate(messages):
        at = f"{where}[{index}]"
        if not isinstance(message, dict):
            raise LineError(f"{at} must be an object")
        role = message.get("role")
        if role not in ROLES:
            raise LineError(f"{at} has an unknown role: {str(role)[:MAX_ERROR_VALUE_CHARS]!r}")
        if assistant_only and role != "assistant":
            raise LineError(f"{at} must have the role 'assistant'")
        _check_content(message, at)
        if "weight" in message:
            if role != "assistant":
                raise LineError(f"{at} has a weight but only assistant messages may")
            if message["weight"] not in (0, 1) or isinstance(message["weight"], bool):
                raise LineError(f"{at} weight must be 0 or 1")
        assistants += role == "assistant"
    return assistants


@dataclass(frozen=True, slots=True)
class MethodRules:
    """What a job's method asks of each example beyond its format."""

    method: MethodType
    # Paths a reinforcement grader reads, as `openft.graders.item_references` names them
    # (`item.answer`, `item.meta.tags[0]`).
    item_references: Sequence[str] = ()


_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _lookup(value: Any, path: str) -> bool:
    """Whether `path` (`a.b[0]`, relative to the example) leads to a value."""
    for name, index in _PATH_PART.findall(path):
        if name and isinstance(value, dict) and name in value:
            value = value[name]
        elif index and isinstance(value, list) and int(index) < len(value):
            value = value[int(index)]
        else:
            return False
    return True


def _check_rules(example: dict[str, Any], assistants: int, rules: MethodRules) -> None:
    if rules.method is MethodType.SUPERVISED and assistants == 0:
        raise LineError("messages has no assistant message to learn from")
    if rules.method is MethodType.REINFORCEMENT:
        if example["messages"][-1].get("role") != "user":
            raise LineError("the last message must be a user message: the prompt the model answers")
        for reference in rules.item_references:
            path = reference.removeprefix("item.")
            if path.split(".")[0].split("[")[0] == "messages" or not _lookup(example, path):
                raise LineError(f"the grader reads {{{{{reference}}}}} but the row has no {path!r}")


def _check_chat(example: dict[str, Any], rules: MethodRules | None) -> None:
    assistants = _check_messages(example["messages"], "messages")
    if rules is not None:
        _check_rules(example, assistants, rules)


def _check_preference(example: dict[str, Any], rules: MethodRules | None) -> None:
    for key in ("input", "preferred_output", "non_preferred_output"):
        if key not in example:
            raise LineError(f"missing required key {key!r}")
    prompt = example["input"]
    if not isinstance(prompt, dict):
        raise LineError("input must be an object with a 'messages' list")
    _check_messages(prompt.get("messages"), "input.messages")
    _check_messages(example["preferred_output"], "preferred_output", assistant_only=True)
    _check_messages(example["non_preferred_output"], "non_preferred_output", assistant_only=True)


def detect_format(example: dict[str, Any]) -> FileFormat:
    if "messages" in example:
        return FileFormat.CHAT
    if "input" in example or "preferred_output" in example:
        return FileFormat.PREFERENCE
    raise LineError(
        "expected a chat example ('messages') or a preference example "
        "('input', 'preferred_output', 'non_preferred_output')"
    )


_CHECKS = {FileFormat.CHAT: _check_chat, FileFormat.PREFERENCE: _check_preference}


class FileValidator:
    """Feed a file line by line; `finish()` reports its format and size or raises.

    Raises `InvalidFile` whose message names the file, the line and what is wrong. With
    `rules`, each example is checked for the job's method as well.
    """

    def __init__(
        self,
        file_label: str,
        expected: FileFormat | None = None,
        rules: MethodRules | None = None,
    ) -> None:
        self._label = file_label
        self._format = expected
        self._rules = rules
        self._line = 0
        self._examples = 0
        self._partial = b""

    def _fail(self, message: str, line: int | None = None) -> InvalidFile:
        where = f"line {line}" if line is not None else "the file"
        return InvalidFile(f"Invalid file {self._label}, {where}: {message}.", param="file")

    def feed(self, chunk: bytes) -> None:
        """Accept any chunk of the file's bytes; complete lines are validated at once."""
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            self._check_line(line)

    def _check_line(self, raw: bytes) -> None:
        self._line += 1
        if not raw.strip():
            return
        try:
            example = json.loads(raw)
        except UnicodeDecodeError as exc:
            raise self._fail("not valid UTF-8", self._line) from exc
        except json.JSONDecodeError as exc:
            detail = f"not valid JSON ({exc.msg} at column {exc.colno})"
            raise self._fail(detail, self._line) from None
        except RecursionError:
            raise self._fail("JSON nested too deeply", self._line) from None
        if not isinstance(example, dict):
            raise self._fail("each line must be a JSON object", self._line)
        try:
            found = detect_format(example)
            if self._format is None:
                self._format = found
            elif found is not self._format:
                raise LineError(
                    f"expected the {self._format.value} format but found a {found.value} example"
                )
            _CHECKS[found](example, self._rules)
        except LineError as exc:
            raise self._fail(str(exc), self._line) from None
        self._examples += 1

    def finish(self, min_examples: int = 1) -> FileReport:
        if self._partial:
            self._check_line(self._partial)
            self._partial = b""
        if self._format is None or self._examples == 0:
            raise self._fail("it contains no examples")
        if self._examples < min_examples:
            raise self._fail(
                f"it has {self._examples} examples, at least {min_examples} are required"
            )
        return FileReport(self._format, self._examples)
