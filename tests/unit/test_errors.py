"""The error tree drawn in domain/errors.py is the hierarchy the code has."""

from __future__ import annotations

import re

from openft.domain import errors
from openft.domain.errors import OpenFTError


def _classes(base: type[OpenFTError]) -> list[type[OpenFTError]]:
    found = [base]
    for sub in base.__subclasses__():
        found += _classes(sub)
    return found


def test_the_drawn_tree_lists_every_class_with_its_parent_and_status() -> None:
    assert errors.__doc__ is not None
    drawn: dict[str, tuple[str, int]] = {}
    parents = ["OpenFTError"]  # the last class drawn at each depth
    for line in errors.__doc__.splitlines():
        match = re.match(r"^([ │├└─]*)(\w+)\s+(\d{3})\s", line)
        if match is None or not match.group(2)[0].isupper():
            continue
        depth = len(match.group(1)) // 5
        parents[depth:] = [match.group(2)]
        drawn[match.group(2)] = (parents[depth - 1], int(match.group(3)))
    actual = {
        cls.__name__: (cls.__mro__[1].__name__, cls.status_code)
        for cls in _classes(OpenFTError)
        if cls is not OpenFTError
    }
    assert drawn == actual
