"""Safe evaluation of arithmetic expressions: a whitelist walk over Python's AST, never `eval`.

Integers and fractions stay exact (Fraction), so a model that uses the calculator gets exact answers on big numbers.
"""

from __future__ import annotations

import ast
import math
import operator
from fractions import Fraction
from typing import Callable

MAX_EXPRESSION_CHARS = 2000
MAX_INT_DIGITS = 2000
MAX_EXPONENT = 10_000

Number = int | float | Fraction


class ExpressionError(ValueError):
    """Raised with a message meant for the model: what is wrong with the expression."""


_BINARY: dict[type, Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: lambda a, b: Fraction(a) / Fraction(b) if not isinstance(a, float) and not isinstance(b, float) else a / b,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_UNARY: dict[type, Callable[[Number], Number]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _sqrt(x: Number) -> Number:
    if x < 0:
        raise ExpressionError("sqrt of a negative number")
    if isinstance(x, int) or (isinstance(x, Fraction) and x.denominator == 1):
        root = math.isqrt(int(x))
        if root * root == x:
            return root
    return math.sqrt(x)


_FUNCTIONS: dict[str, Callable[..., Number]] = {
    "abs": abs,
    "round": lambda x, n=0: round(Fraction(x), int(n)) if n else round(x),
    "min": min,
    "max": max,
    "floor": math.floor,
    "ceil": math.ceil,
    "sqrt": _sqrt,
    "gcd": lambda a, b: math.gcd(int(a), int(b)),
    "lcm": lambda a, b: math.lcm(int(a), int(b)),
    "factorial": lambda n: math.factorial(_small_int(n, "factorial", 500)),
    "log": lambda x, base=math.e: math.log(x, base),
    "exp": math.exp,
}
_CONSTANTS: dict[str, Number] = {"pi": math.pi, "e": math.e}


def _small_int(value: Number, what: str, limit: int) -> int:
    if isinstance(value, float) and not value.is_integer() or isinstance(value, Fraction) and value.denominator != 1:
        raise ExpressionError(f"{what} needs a whole number, got {format_number(value)}")
    if abs(value) > limit:
        raise ExpressionError(f"{what} argument {format_number(value)} is too large (limit {limit})")
    return int(value)


def evaluate(expression: str) -> Number:
    """Evaluate `expression`; raise ExpressionError with a model-readable reason on anything else."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"expression is longer than {MAX_EXPRESSION_CHARS} characters")
    text = expression.replace("^", "**").replace("×", "*").replace("÷", "/").strip()
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"cannot parse `{expression}`: {exc.msg} at column {exc.offset}") from None
    return _eval(tree.body)


def _eval(node: ast.AST) -> Number:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            return _power(left, right)
        op = _BINARY.get(type(node.op))
        if op is None:
            raise ExpressionError(f"operator {type(node.op).__name__} is not supported")
        try:
            result = op(left, right)
        except ZeroDivisionError:
            raise ExpressionError("division by zero") from None
        return _checked(result)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        func = _FUNCTIONS.get(node.func.id)
        if func is None:
            raise ExpressionError(f"unknown function `{node.func.id}`; available: {', '.join(sorted(_FUNCTIONS))}")
        try:
            return _checked(func(*[_eval(arg) for arg in node.args]))
        except (TypeError, ValueError, OverflowError) as exc:
            if isinstance(exc, ExpressionError):
                raise
            raise ExpressionError(f"{node.func.id}(): {exc}") from None
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    raise ExpressionError(f"`{ast.unparse(node)}` is not arithmetic (numbers, + - * / // % ** and math functions only)")


def _power(base: Number, exponent: Number) -> Number:
    if abs(exponent) > MAX_EXPONENT:
        raise ExpressionError(f"exponent {format_number(exponent)} is too large (limit {MAX_EXPONENT})")
    if isinstance(base, (int, Fraction)) and isinstance(exponent, int):
        if base != 0 and abs(base) != 1 and math.log10(abs(float(base))) * abs(exponent) > MAX_INT_DIGITS:
            raise ExpressionError(f"result would have more than {MAX_INT_DIGITS} digits")
        if exponent < 0:
            if base == 0:
                raise ExpressionError("division by zero")
            return Fraction(1) / Fraction(base) ** -exponent
        return base**exponent
    try:
        result = float(base) ** float(exponent)
    except (OverflowError, ZeroDivisionError) as exc:
        raise ExpressionError(f"power overflow: {exc}") from None
    if isinstance(result, complex):
        raise ExpressionError("fractional power of a negative number")
    return result


def _checked(value: Number) -> Number:
    if isinstance(value, Fraction) and value.denominator == 1:
        value = value.numerator
    if isinstance(value, int) and value.bit_length() > MAX_INT_DIGITS * 3.33:
        raise ExpressionError(f"result has more than {MAX_INT_DIGITS} digits")
    if isinstance(value, float) and not math.isfinite(value):
        raise ExpressionError("result is not a finite number")
    return value


def format_number(value: Number) -> str:
    """Exact text for ints, a fraction plus its decimal for fractions, plain repr for floats."""
    if isinstance(value, Fraction):
        if value.denominator == 1:
            return str(value.numerator)
        return f"{value.numerator}/{value.denominator} (≈ {float(value):.10g})"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)
