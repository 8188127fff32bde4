"""Graders as OpenAI's API writes them (`Grader*` schemas), checked in full by `parse`.

Every refusal is an `InvalidRequest` whose `param` points at the field (`grader.operation`,
`grader.graders.exact.reference`, `grader.input[0].content`), so the API answers a 400 in
OpenAI's envelope and a job is refused before it is created. What `parse` accepts, the
graders can run: templates are compiled, formulas checked, python sources compiled (not
run), metrics known to be available here."""

from __future__ import annotations

import ast
import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from openft.domain.errors import InvalidRequest
from openft.graders.expressions import Expression, compile_expression
from openft.graders.templates import Reference, Template, compile_template

# OpenAI's graders guide: "Your uploaded code must be less than 256kB".
PYTHON_SOURCE_LIMIT = 256 * 1024
MAX_SUB_GRADERS = 32

GRADER_TYPES = ("string_check", "text_similarity", "python", "score_model", "label_model", "multi")
STRING_OPERATIONS = ("eq", "ne", "like", "ilike")
SIMILARITY_METRICS = (
    "cosine",
    "fuzzy_match",
    "bleu",
    "gleu",
    "meteor",
    "rouge_1",
    "rouge_2",
    "rouge_3",
    "rouge_4",
    "rouge_5",
    "rouge_l",
)
MESSAGE_ROLES = ("user", "assistant", "system", "developer")
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


@dataclass(frozen=True)
class BaseGrader:
    name: str
    # The grader as it was given (the validate endpoint echoes it).
    spec: dict[str, Any] = field(repr=False, compare=False)

    @property
    def type(self) -> str:
        raise NotImplementedError

    def templates(self) -> list[Template]:
        return []


@dataclass(frozen=True)
class StringCheckGrader(BaseGrader):
    input: Template = field(kw_only=True)
    reference: Template = field(kw_only=True)
    operation: str = field(kw_only=True)

    @property
    def type(self) -> str:
        return "string_check"

    def templates(self) -> list[Template]:
        return [self.input, self.reference]


@dataclass(frozen=True)
class TextSimilarityGrader(BaseGrader):
    input: Template = field(kw_only=True)
    reference: Template = field(kw_only=True)
    metric: str = field(kw_only=True)

    @property
    def type(self) -> str:
        return "text_similarity"

    def templates(self) -> list[Template]:
        return [self.input, self.reference]


@dataclass(frozen=True)
class PythonGrader(BaseGrader):
    source: str = field(kw_only=True)
    image_tag: str | None = field(default=None, kw_only=True)

    @property
    def type(self) -> str:
        return "python"


@dataclass(frozen=True)
class ModelMessage:
    role: str
    parts: tuple[Template, ...]


@dataclass(frozen=True)
class ModelSampling:
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    max_completions_tokens: int | None = None
    reasoning_effort: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class ModelGrader(BaseGrader):
    model: str = field(kw_only=True)
    input: tuple[ModelMessage, ...] = field(kw_only=True)
    sampling: ModelSampling = field(default_factory=ModelSampling, kw_only=True)

    def templates(self) -> list[Template]:
        return [part for message in self.input for part in message.parts]


@dataclass(frozen=True)
class ScoreModelGrader(ModelGrader):
    range: tuple[float, float] = field(default=(0.0, 1.0), kw_only=True)

    @property
    def type(self) -> str:
        return "score_model"


@dataclass(frozen=True)
class LabelModelGrader(ModelGrader):
    labels: tuple[str, ...] = field(kw_only=True)
    passing_labels: tuple[str, ...] = field(kw_only=True)

    @property
    def type(self) -> str:
        return "label_model"


@dataclass(frozen=True)
class MultiGrader(BaseGrader):
    # Sub-graders by the name `calculate_output` calls them.
    graders: dict[str, Grader] = field(kw_only=True)
    calculate_output: Expression = field(kw_only=True)
    # Other names a formula may use for a grader (`<type>_score` in a list): alias -> name.
    aliases: dict[str, str] = field(default_factory=dict, kw_only=True)

    @property
    def type(self) -> str:
        return "multi"

    def templates(self) -> list[Template]:
        return [t for grader in self.graders.values() for t in grader.templates()]


Grader = (
    StringCheckGrader
    | TextSimilarityGrader
    | PythonGrader
    | ScoreModelGrader
    | LabelModelGrader
    | MultiGrader
)


def parse(raw: Any, param: str = "grader") -> Grader:
    """Check a grader in full and build it; raises `InvalidRequest(param="grader.…")`."""
    return _parse(raw, param, nested=False)


def item_references(grader: Grader) -> list[str]:
    """The `item.…` variables the grader's templates read, each once, in order (a python
    grader reads what it likes, so it adds none)."""
    return [ref.text for ref in item_reference_objects(grader)]


def models_called(grader: Grader, param: str = "grader") -> list[tuple[str, str]]:
    """The models the grader's model graders call (inside a multi too), each with the
    param of its `model` field, for a caller that checks who may call them."""
    if isinstance(grader, MultiGrader):
        return [
            found
            for name, inner in grader.graders.items()
            for found in models_called(inner, f"{param}.graders.{name}")
        ]
    return [(grader.model, f"{param}.model")] if isinstance(grader, ModelGrader) else []


def item_reference_objects(grader: Grader) -> list[Reference]:
    """The `item.…` references the grader's templates hold, each once, in order."""
    refs: dict[str, Reference] = {}
    for template in grader.templates():
        for ref in template.references:
            if ref.namespace == "item":
                refs.setdefault(ref.text, ref)
    return list(refs.values())


def _parse(raw: Any, param: str, *, nested: bool) -> Grader:
    if not isinstance(raw, Mapping):
        raise InvalidRequest("A grader must be an object.", param=param)
    kind = raw.get("type")
    if kind not in GRADER_TYPES:
        raise InvalidRequest(
            f"Unknown grader type {kind!r}: expected one of {', '.join(GRADER_TYPES)}.",
            param=f"{param}.type",
        )
    name = raw.get("name", kind)
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest("'name' must be a non-empty string.", param=f"{param}.name")
    spec = copy.deepcopy(dict(raw))
    if kind == "string_check":
        operation = raw.get("operation")
        if operation not in STRING_OPERATIONS:
            raise InvalidRequest(
                f"'operation' must be one of {', '.join(STRING_OPERATIONS)}.",
                param=f"{param}.operation",
            )
        return StringCheckGrader(
            name,
            spec,
            input=_template(raw, "input", param),
            reference=_template(raw, "reference", param),
            operation=operation,
        )
    if kind == "text_similarity":
        metric = raw.get("evaluation_metric")
        _check_metric(metric, f"{param}.evaluation_metric")
        assert isinstance(metric, str)
        return TextSimilarityGrader(
            name,
            spec,
            input=_template(raw, "input", param),
            reference=_template(raw, "reference", param),
            metric=metric,
        )
    if kind == "python":
        source = raw.get("source")
        _check_python(source, f"{param}.source")
        assert isinstance(source, str)
        tag = raw.get("image_tag")
        if tag is not None and not isinstance(tag, str):
            raise InvalidRequest("'image_tag' must be a string.", param=f"{param}.image_tag")
        return PythonGrader(name, spec, source=source, image_tag=tag)
    if kind == "score_model":
        return ScoreModelGrader(
            name,
            spec,
            model=_model(raw, param),
            input=_messages(raw.get("input"), f"{param}.input"),
            sampling=_sampling(raw.get("sampling_params"), f"{param}.sampling_params"),
            range=_range(raw.get("range"), f"{param}.range"),
        )
    if kind == "label_model":
        labels = _labels(raw.get("labels"), f"{param}.labels")
        passing = _labels(raw.get("passing_labels"), f"{param}.passing_labels")
        strangers = [label for label in passing if label not in labels]
        if strangers:
            raise InvalidRequest(
                f"'passing_labels' must be a subset of 'labels': {strangers[0]!r} is not a label.",
                param=f"{param}.passing_labels",
            )
        return LabelModelGrader(
            name,
            spec,
            model=_model(raw, param),
            input=_messages(raw.get("input"), f"{param}.input"),
            sampling=_sampling(raw.get("sampling_params"), f"{param}.sampling_params"),
            labels=labels,
            passing_labels=passing,
        )
    if kind == "multi":
        if nested:
            raise InvalidRequest(
                "A multi grader's graders cannot be multi graders.", param=f"{param}.type"
            )
        graders, aliases = _sub_graders(raw.get("graders"), f"{param}.graders")
        expression = compile_expression(
            raw.get("calculate_output"),
            frozenset(graders) | frozenset(aliases),
            f"{param}.calculate_output",
        )
        return MultiGrader(
            name, spec, graders=graders, calculate_output=expression, aliases=aliases
        )
    raise AssertionError(f"grader type {kind} is listed but not parsed")


def _template(raw: Mapping[str, Any], key: str, param: str) -> Template:
    if key not in raw:
        raise InvalidRequest(f"'{key}' is required.", param=f"{param}.{key}")
    return compile_template(raw[key], f"{param}.{key}")


def _check_metric(metric: Any, param: str) -> None:
    if metric not in SIMILARITY_METRICS:
        raise InvalidRequest(
            f"'evaluation_metric' must be one of {', '.join(SIMILARITY_METRICS)}.", param=param
        )
    if metric == "cosine":
        raise InvalidRequest(
            "The 'cosine' metric needs an embedding model and is not supported for "
            "fine-tuning graders; use fuzzy_match, bleu, gleu, meteor or rouge_*.",
            param=param,
        )
    if metric == "meteor":
        # Imported here: the metric's libraries load only when a grader needs them.
        from openft.graders.similarity import meteor_unavailable

        why = meteor_unavailable()
        if why is not None:
            raise InvalidRequest(f"The 'meteor' metric is not available here: {why}", param=param)


def _check_python(source: Any, param: str) -> None:
    if not isinstance(source, str) or not source.strip():
        raise InvalidRequest("'source' must be a non-empty string of Python.", param=param)
    size = len(source.encode("utf-8", "surrogatepass"))
    if size > PYTHON_SOURCE_LIMIT:
        raise InvalidRequest(
            f"'source' is {size} bytes; a python grader's source may be at most "
            f"{PYTHON_SOURCE_LIMIT} bytes (256 KiB).",
            param=param,
        )
    try:
        tree = ast.parse(source, filename="grader.py")
    except (SyntaxError, ValueError) as exc:
        where = f" (line {exc.lineno})" if isinstance(exc, SyntaxError) else ""
        raise InvalidRequest(
            f"'source' is not valid Python: {getattr(exc, 'msg', exc)}{where}.", param=param
        ) from None
    except (RecursionError, MemoryError):
        raise InvalidRequest("'source' is nested too deeply to compile.", param=param) from None
    if not any(_binds_grade(node) for node in tree.body):
        raise InvalidRequest(
            "'source' must define a function grade(sample, item) returning a number.",
            param=param,
        )


def _binds_grade(node: ast.stmt) -> bool:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return node.name == "grade"
    if isinstance(node, ast.Assign):
        return any(isinstance(t, ast.Name) and t.id == "grade" for t in node.targets)
    if isinstance(node, ast.ImportFrom | ast.Import):
        return any((alias.asname or alias.name) == "grade" for alias in node.names)
    return False


def _model(raw: Mapping[str, Any], param: str) -> str:
    model = raw.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest(
            "'model' must name a model this server serves.", param=f"{param}.model"
        )
    return model


def _messages(raw: Any, param: str) -> tuple[ModelMessage, ...]:
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("'input' must be a non-empty list of messages.", param=param)
    messages = []
    for n, item in enumerate(raw):
        where = f"{param}[{n}]"
        if not isinstance(item, Mapping):
            raise InvalidRequest("Each input message must be an object.", param=where)
        if item.get("type", "message") != "message":
            raise InvalidRequest(
                "An input message's type must be 'message'.", param=f"{where}.type"
            )
        role = item.get("role")
        if role not in MESSAGE_ROLES:
            raise InvalidRequest(
                f"'role' must be one of {', '.join(MESSAGE_ROLES)}.", param=f"{where}.role"
            )
        messages.append(ModelMessage(role, _content(item.get("content"), f"{where}.content")))
    return tuple(messages)


def _content(content: Any, param: str) -> tuple[Template, ...]:
    if isinstance(content, list):
        if not content:
            raise InvalidRequest("'content' cannot be an empty list.", param=param)
        return tuple(_part(part, f"{param}[{n}]") for n, part in enumerate(content))
    return (_part(content, param),)


def _part(part: Any, param: str) -> Template:
    if isinstance(part, str):
        return compile_template(part, param)
    if isinstance(part, Mapping):
        kind = part.get("type")
        if kind in ("input_text", "output_text"):
            return compile_template(part.get("text"), f"{param}.text")
        if kind in ("input_image", "input_audio"):
            raise InvalidRequest(
                f"'{kind}' content is not supported: this server's grader models read text only.",
                param=f"{param}.type",
            )
    raise InvalidRequest(
        "Content must be a string or an input_text or output_text part.", param=param
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _sampling(raw: Any, param: str) -> ModelSampling:
    if raw is None:
        return ModelSampling()
    if not isinstance(raw, Mapping):
        raise InvalidRequest("'sampling_params' must be an object.", param=param)
    temperature, top_p = raw.get("temperature"), raw.get("top_p")
    seed, limit = raw.get("seed"), raw.get("max_completions_tokens")
    effort = raw.get("reasoning_effort")
    if temperature is not None and not (_number(temperature) and 0 <= temperature <= 2):
        raise InvalidRequest("'temperature' must be between 0 and 2.", param=f"{param}.temperature")
    if top_p is not None and not (_number(top_p) and 0 < top_p <= 1):
        raise InvalidRequest("'top_p' must be above 0 and at most 1.", param=f"{param}.top_p")
    if seed is not None and not (
        isinstance(seed, int) and not isinstance(seed, bool) and -(2**63) <= seed < 2**63
    ):
        raise InvalidRequest("'seed' must be a 64-bit integer.", param=f"{param}.seed")
    if limit is not None and not (
        isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1
    ):
        raise InvalidRequest(
            "'max_completions_tokens' must be an integer of at least 1.",
            param=f"{param}.max_completions_tokens",
        )
    if effort is not None and effort not in REASONING_EFFORTS:
        raise InvalidRequest(
            f"'reasoning_effort' must be one of {', '.join(REASONING_EFFORTS)}.",
            param=f"{param}.reasoning_effort",
        )
    return ModelSampling(
        temperature=None if temperature is None else float(temperature),
        top_p=None if top_p is None else float(top_p),
        seed=seed,
        max_completions_tokens=limit,
        reasoning_effort=effort,
    )


def _range(raw: Any, param: str) -> tuple[float, float]:
    if raw is None:
        return (0.0, 1.0)
    if not (isinstance(raw, list) and len(raw) == 2 and all(_number(v) for v in raw)):
        raise InvalidRequest("'range' must be two numbers: [low, high].", param=param)
    low, high = float(raw[0]), float(raw[1])
    if not low < high:
        raise InvalidRequest("'range' must have its low end below its high end.", param=param)
    return (low, high)


def _labels(raw: Any, param: str) -> tuple[str, ...]:
    if not (isinstance(raw, list) and raw and all(isinstance(v, str) and v for v in raw)):
        raise InvalidRequest("Expected a non-empty list of non-empty strings.", param=param)
    if len(set(raw)) != len(raw):
        raise InvalidRequest("The labels must be distinct.", param=param)
    return tuple(raw)


def _sub_graders(raw: Any, param: str) -> tuple[dict[str, Grader], dict[str, str]]:
    """A map of named graders (OpenAI's guides), a list, or one grader object (OpenAI's
    spec): in a list, each is called by its `name`, and also `<type>_score` where it is
    the only grader of its type (the spec's own example formula)."""
    if isinstance(raw, Mapping) and "type" in raw and isinstance(raw.get("type"), str):
        raw = [raw]
    graders: dict[str, Grader] = {}
    aliases: dict[str, str] = {}
    if isinstance(raw, Mapping):
        if not raw:
            raise InvalidRequest("'graders' cannot be empty.", param=param)
        for key, sub in raw.items():
            if not isinstance(key, str) or not key.isidentifier():
                raise InvalidRequest(
                    f"Grader name {key!r} must be an identifier (letters, digits, _) so that "
                    "'calculate_output' can use it.",
                    param=f"{param}.{key}",
                )
            graders[key] = _parse(sub, f"{param}.{key}", nested=True)
    elif isinstance(raw, list):
        if not raw:
            raise InvalidRequest("'graders' cannot be empty.", param=param)
        parsed = [_parse(sub, f"{param}[{n}]", nested=True) for n, sub in enumerate(raw)]
        for n, grader in enumerate(parsed):
            if grader.name in graders:
                raise InvalidRequest(
                    f"Two graders are named {grader.name!r}.", param=f"{param}[{n}].name"
                )
            graders[grader.name] = grader
        kinds = [g.type for g in parsed]
        for grader in parsed:
            alias = f"{grader.type}_score"
            if kinds.count(grader.type) == 1 and alias not in graders:
                aliases[alias] = grader.name
    else:
        raise InvalidRequest(
            "'graders' must be a map of named graders or a list of graders.", param=param
        )
    if len(graders) > MAX_SUB_GRADERS:
        raise InvalidRequest(
            f"A multi grader may hold at most {MAX_SUB_GRADERS} graders.", param=param
        )
    return graders, aliases
