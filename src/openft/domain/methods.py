"""How a create request's `hyperparameters` and `method` become one `Method`."""

from __future__ import annotations

from typing import Any

from openft.domain.entities import RFT_HYPERPARAMETERS, Hyperparameters, Method, MethodType
from openft.domain.errors import InvalidRequest

SUPPORTED = ", ".join(t.value for t in MethodType)
REASONING_EFFORTS = ("default", "low", "medium", "high")
# What an RFT hyperparameter left out defaults to (the spec's defaults).
_RFT_DEFAULTS: dict[str, Any] = {
    "reasoning_effort": "default",
    "compute_multiplier": "auto",
    "eval_interval": "auto",
    "eval_samples": "auto",
}


def _hyperparameters(values: dict[str, Any] | None, method: MethodType) -> Hyperparameters:
    values = {k: v for k, v in (values or {}).items() if v is not None}
    beta = values.pop("beta", "auto" if method is MethodType.DPO else None)
    if method is not MethodType.DPO and beta is not None:
        raise InvalidRequest("beta is a DPO hyperparameter.", param="method")
    rft = method is MethodType.REINFORCEMENT
    for name in RFT_HYPERPARAMETERS:
        if name in values and not rft:
            raise InvalidRequest(
                f"{name} is a reinforcement hyperparameter.", param=f"method.{method.value}"
            )
        if rft:
            values.setdefault(name, _RFT_DEFAULTS[name])
    if rft and values["reasoning_effort"] not in REASONING_EFFORTS:
        raise InvalidRequest(
            f"reasoning_effort must be one of: {', '.join(REASONING_EFFORTS)}.",
            param="method.reinforcement.hyperparameters.reasoning_effort",
        )
    return Hyperparameters(beta=beta, **values)


def _response_format(value: Any) -> dict[str, Any] | None:
    """OpenAI's `{"type": "json_schema", "json_schema": {"name", "schema", …}}`, or none."""
    param = "method.reinforcement.response_format"
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") != "json_schema":
        raise InvalidRequest(
            "response_format must be an object of type 'json_schema'.", param=f"{param}.type"
        )
    schema = value.get("json_schema")
    if not isinstance(schema, dict) or not isinstance(schema.get("schema", {}), dict):
        raise InvalidRequest(
            "response_format.json_schema must be an object with a 'name' and a 'schema'.",
            param=f"{param}.json_schema",
        )
    return value


def _reinforcement(section: dict[str, Any]) -> Method:
    grader = section.get("grader")
    if not isinstance(grader, dict):
        raise InvalidRequest(
            "A reinforcement method needs a grader (an object).",
            param="method.reinforcement.grader",
        )
    return Method(
        MethodType.REINFORCEMENT,
        _hyperparameters(section.get("hyperparameters"), MethodType.REINFORCEMENT),
        grader=grader,
        response_format=_response_format(section.get("response_format")),
    )


def resolve_method(hyperparameters: dict[str, Any] | None, method: dict[str, Any] | None) -> Method:
    """Combine the deprecated top-level `hyperparameters` with `method`, as OpenAI does.

    A reinforcement method's grader is kept as given here; the service checks it with
    `openft.graders` (which this pure layer does not import)."""
    if method is None:
        return Method(
            MethodType.SUPERVISED, _hyperparameters(hyperparameters, MethodType.SUPERVISED)
        )
    try:
        kind = MethodType(method["type"])
    except ValueError:
        raise InvalidRequest(
            f"Fine-tuning method {method['type']!r} is not supported here; "
            f"use one of: {SUPPORTED}.",
            param="method.type",
            code="unsupported_method",
        ) from None
    if hyperparameters:
        raise InvalidRequest(
            "Specify hyperparameters inside method, not at the top level as well.",
            param="hyperparameters",
        )
    for other in MethodType:
        if other is not kind and method.get(other.value) is not None:
            raise InvalidRequest(
                f"method.{other.value} is given but method.type is {kind.value}.",
                param=f"method.{other.value}",
            )
    section = method.get(kind.value) or {}
    if kind is MethodType.REINFORCEMENT:
        return _reinforcement(section)
    return Method(kind, _hyperparameters(section.get("hyperparameters"), kind))
