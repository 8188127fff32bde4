"""Grader templates: text with `{{ item.x }}` and `{{ sample.output_text }}` references.

A reference is a namespace (`item` or `sample`) and a path of fields and list indices:
`item.answer`, `item.meta.tags[0]`, `item.rows.2.name`, `sample.output_json.steps[-1]`,
`item["key with spaces"]`. Templates are checked when the grader is parsed (a reference
that cannot be read is a 400 naming the field) and rendered per sample (a variable the
item or sample lacks raises `UnknownVariable`, which a grader reports as
`invalid_variable_error`). Strings render as they are; anything else as JSON."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from openft.domain.errors import InvalidRequest

NAMESPACES = ("item", "sample")
SAMPLE_FIELDS = ("output_text", "output_json", "output_tools")

_REFERENCE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_SEGMENT = re.compile(
    r"""\s*(?:
        (?P<dot>\.)?(?P<name>[A-Za-z_][A-Za-z0-9_\-]*)  # .field (the first one without a dot)
      | \.(?P<dotindex>-?\d+)                      # .0
      | \[\s*(?P<index>-?\d+)\s*\]                  # [0]
      | \[\s*(?P<quoted>"(?:[^"\\]|\\.)*"|'[^']*')\s*\]   # ["key"] or ['key']
    )""",
    re.VERBOSE,
)

Step = str | int


class UnknownVariable(Exception):
    """A template names a variable that this item or sample does not have."""

    def __init__(self, reference: str) -> None:
        super().__init__(f"{reference} is not a variable of this item or sample")
        self.reference = reference


@dataclass(frozen=True, slots=True)
class Reference:
    namespace: str
    path: tuple[Step, ...]
    text: str

    def resolve(self, context: Mapping[str, Any]) -> Any:
        value: Any = context.get(self.namespace)
        for step in self.path:
            value = _step(value, step, self.text)
        return value


def _step(value: Any, step: Step, text: str) -> Any:
    if isinstance(step, int):
        if isinstance(value, list) and -len(value) <= step < len(value):
            return value[step]
        if isinstance(value, Mapping) and str(step) in value:
            return value[str(step)]
        raise UnknownVariable(text)
    if isinstance(value, Mapping) and step in value:
        return value[step]
    raise UnknownVariable(text)


def parse_reference(body: str, param: str) -> Reference:
    """`item.a.b[0]` (the text between the braces) as a reference; a 400 if unreadable."""
    text = body.strip()
    steps: list[Step] = []
    position = 0
    while position < len(body):
        if not body[position:].strip():
            break
        match = _SEGMENT.match(body, position)
        if (
            match is None
            or match.end() == position
            or (match["name"] is not None and bool(match["dot"]) != bool(steps))
        ):
            raise InvalidRequest(
                f"The template variable {{{{{text}}}}} cannot be read.", param=param
            )
        if match["name"] is not None:
            steps.append(match["name"])
        elif match["dotindex"] is not None:
            steps.append(int(match["dotindex"]))
        elif match["index"] is not None:
            steps.append(int(match["index"]))
        else:
            steps.append(_unquote(match["quoted"]))
        position = match.end()
    if not steps or steps[0] not in NAMESPACES or not isinstance(steps[0], str):
        raise InvalidRequest(
            f"The template variable {{{{{text}}}}} must start with a namespace: "
            f"{' or '.join(NAMESPACES)}.",
            param=param,
        )
    namespace, path = steps[0], tuple(steps[1:])
    if namespace == "sample" and (not path or path[0] not in SAMPLE_FIELDS):
        raise InvalidRequest(
            f"The template variable {{{{{text}}}}} is not a sample variable: expected one of "
            f"{', '.join('sample.' + name for name in SAMPLE_FIELDS)}.",
            param=param,
        )
    return Reference(namespace, path, _canonical(namespace, path))


def _unquote(quoted: str) -> str:
    if quoted.startswith('"'):
        value = json.loads(quoted)
        assert isinstance(value, str)
        return value
    return quoted[1:-1]


def _canonical(namespace: str, path: tuple[Step, ...]) -> str:
    out = namespace
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", step):
            out += f".{step}"
        else:
            out += f"[{json.dumps(step)}]"
    return out


@dataclass(frozen=True, slots=True)
class Template:
    """A checked template: its literal text and the references in it."""

    source: str
    references: tuple[Reference, ...]

    def render(self, context: Mapping[str, Any]) -> str:
        """The text with each reference replaced; raises `UnknownVariable`."""
        if not self.references:
            return self.source
        values = iter([_text(ref.resolve(context)) for ref in self.references])
        return _REFERENCE.sub(lambda _: next(values), self.source)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def compile_template(source: Any, param: str) -> Template:
    if not isinstance(source, str):
        raise InvalidRequest("Expected a string (it may hold template variables).", param=param)
    references = tuple(parse_reference(m.group(1), param) for m in _REFERENCE.finditer(source))
    return Template(source, references)


def context(sample_namespace: Mapping[str, Any], item: Mapping[str, Any]) -> dict[str, Any]:
    return {"sample": sample_namespace, "item": item}
