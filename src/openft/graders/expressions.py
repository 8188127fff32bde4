"""`calculate_output` of a multi grader: arithmetic over the named sub-graders' rewards.

Parsed with Python's own `ast` and evaluated by walking an allow-list of nodes, never by
`eval`: numbers, the graders' names, `+ - * /`, `^` and `**` (both power), unary minus,
parentheses, and the functions `min max abs floor ceil exp sqrt log`. Every value is a
float, so no expression can build a huge integer; a result that is not a finite number
(division by zero, log of a negative, overflow) is an `ExpressionError`."""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from openft.domain.errors import InvalidRequest

MAX_LENGTH = 10_000  # characters: a formula, not a program

_FUNCTIONS: dict[str, tuple[Callable[..., float], int | None]] = {
    # name: (function, number of arguments; None: one or more)
    "min": (min, None),
    "max": (max, None),
    "abs": (abs, 1),
    "floor": (lambda x: float(math.floor(x)), 1),
    "ceil": (lambda x: float(math.ceil(x)), 1),
    "exp": (math.exp, 1),
    "sqrt": (math.sqrt, 1),
    "log": (math.log, 1),
}
_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: math.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {
    ast.USub: lambda a: -a,
    ast.UAdd: lambda a: a,
}


class ExpressionError(Exception):
    """The formula could not give a finite number for these rewards."""


@dataclass(frozen=True, slots=True)
class Expression:
    source: str
    tree: ast.expr
    names: frozenset[str]

    def evaluate(self, values: Mapping[str, float]) -> float:
        try:
            result = _evaluate(self.tree, values)
        except (ArithmeticError, ValueError, RecursionError) as exc:
            raise ExpressionError(f"{self.source!r} cannot be computed: {exc}") from None
        if not math.isfinite(result):
            raise ExpressionError(f"{self.source!r} is not a finite number for these rewards")
        return result


def compile_expression(source: object, names: frozenset[str], param: str) -> Expression:
    """Check `source` against the allow-list and the graders' `names`; a 400 at `param`."""
    if not isinstance(source, str) or not source.strip():
        raise InvalidRequest("'calculate_output' must be a non-empty formula.", param=param)
    if len(source) > MAX_LENGTH:
        raise InvalidRequest(
            f"'calculate_output' may be at most {MAX_LENGTH} characters.", param=param
        )
    try:
        # OpenAI writes power as `^`: read as `**`, it binds as a power does (tighter than
        # * and /, from the right), where Python's `^` (xor) would bind looser than +.
        # A formula holds no strings, so no `^` is anything else.
        tree = ast.parse(source.strip().replace("^", "**"), mode="eval").body
    except SyntaxError as exc:
        raise InvalidRequest(
            f"'calculate_output' is not a formula: {exc.msg} (column {exc.offset}).",
            param=param,
        ) from None
    except (RecursionError, MemoryError):
        raise InvalidRequest("'calculate_output' is nested too deeply.", param=param) from None
    used: set[str] = set()
    try:
        _check(tree, names, used, param)
    except RecursionError:
        raise InvalidRequest("'calculate_output' is nested too deeply.", param=param) from None
    return Expression(source, tree, frozenset(used))


def _check(node: ast.AST, names: frozenset[str], used: set[str], param: str) -> None:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise InvalidRequest(f"{node.value!r} is not a number.", param=param)
    elif isinstance(node, ast.Name):
        if node.id not in names:
            known = ", ".join(sorted(names)) or "none"
            raise InvalidRequest(
                f"'{node.id}' in 'calculate_output' names no grader (graders: {known}).",
                param=param,
            )
        used.add(node.id)
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        _check(node.left, names, used, param)
        _check(node.right, names, used, param)
    elif isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        _check(node.operand, names, used, param)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        spec = _FUNCTIONS.get(node.func.id)
        if spec is None or node.keywords:
            raise InvalidRequest(
                f"'{node.func.id}' is not a function of 'calculate_output' (functions: "
                f"{', '.join(_FUNCTIONS)}).",
                param=param,
            )
        arity = spec[1]
        if (arity is None and not node.args) or (arity is not None and len(node.args) != arity):
            raise InvalidRequest(
                f"{node.func.id}() takes {arity or 'at least one'} argument(s).", param=param
            )
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise InvalidRequest("'*' arguments are not allowed.", param=param)
            _check(arg, names, used, param)
    else:
        raise InvalidRequest(
            f"'calculate_output' may use numbers, grader names, + - * / ^ and "
            f"{', '.join(_FUNCTIONS)}; it has {ast.unparse(node)!r}.",
            param=param,
        )


def _evaluate(node: ast.expr, values: Mapping[str, float]) -> float:
    if isinstance(node, ast.Constant):
        assert isinstance(node.value, int | float)
        return float(node.value)
    if isinstance(node, ast.Name):
        return float(values[node.id])
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_evaluate(node.left, values), _evaluate(node.right, values))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_evaluate(node.operand, values))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        function = _FUNCTIONS[node.func.id][0]
        return float(function(*(_evaluate(arg, values) for arg in node.args)))
    raise AssertionError(f"unchecked node {ast.dump(node)}")  # _check allows no other
