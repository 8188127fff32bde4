"""How a create request's `hyperparameters` and `method` become one `Method`."""

from __future__ import annotations

from typing import Any

from openft.domain.entities import Hyperparameters, Method, MethodType
from openft.domain.errors import InvalidRequest

SUPPORTED = ", ".join(t.value for t in MethodType)


def _hyperparameters(values: dict[str, Any] | None, method: MethodType) -> Hyperparameters:
    values = dict(values or {})
    beta = values.pop("beta", "auto" if method is MethodType.DPO else None)
    if method is not MethodType.DPO and beta is not None:
        raise InvalidRequest("beta is a DPO hyperparameter.", param="method")
    return Hyperparameters(beta=beta, **{k: v for k, v in values.items() if v is not None})


def resolve_method(hyperparameters: dict[str, Any] | None, method: dict[str, Any] | None) -> Method:
    """Combine the deprecated top-level `hyperparameters` with `method`, as OpenAI does."""
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
    return Method(kind, _hyperparameters(section.get("hyperparameters"), kind))
