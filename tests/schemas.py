"""Validation of response bodies against the contract documents in tests/contract/."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

CONTRACT = Path(__file__).parent / "contract"


def _openapi30(node: Any) -> Any:
    """OpenAI's document is OpenAPI 3.0 in places; JSON Schema 2020-12 reads it after two
    rewrites: `minimum: 0` with `exclusiveMinimum: true` becomes `exclusiveMinimum: 0`,
    and `nullable: true` becomes "this, or null"."""
    if isinstance(node, dict):
        if node.get("exclusiveMinimum") is True and "minimum" in node:
            node = {k: v for k, v in node.items() if k != "minimum"} | {
                "exclusiveMinimum": node["minimum"]
            }
        if node.get("nullable") is True:
            rest = _openapi30({k: v for k, v in node.items() if k != "nullable"})
            return {"anyOf": [rest, {"type": "null"}]}
        return {k: _openapi30(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_openapi30(v) for v in node]
    return node


@cache
def validator(document: str, schema: str) -> Draft202012Validator:
    spec = _openapi30(yaml.safe_load((CONTRACT / document).read_text()))
    registry = Registry().with_resource(
        "urn:spec", Resource.from_contents(spec, default_specification=DRAFT202012)
    )
    return Draft202012Validator(
        {"$ref": f"urn:spec#/components/schemas/{schema}"}, registry=registry
    )


def assert_valid(document: str, schema: str, body: Any) -> None:
    errors = sorted(validator(document, schema).iter_errors(body), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])
