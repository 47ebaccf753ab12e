"""Safe arithmetic: evaluate a calculator expression without ``eval``.

``evaluate(expression)`` returns ``{"expression": "17*23", "result": 391}``.

The expression is parsed with :mod:`ast` and walked by hand; only these are accepted:

- numbers: ``42``, ``3.5``, ``1e-3``, ``1_000`` (no booleans, no complex numbers);
- operators ``+ - * / // % **`` and unary ``+``/``-``, with parentheses;
- ``^`` means power, as on a pocket calculator (``2^10`` is 1024) — bitwise XOR is not
  offered, so nothing is lost;
- constants ``pi``, ``e``, ``tau``;
- functions ``abs round min max sqrt exp log log2 log10 floor ceil sin cos tan asin
  acos atan degrees radians hypot factorial``.

Anything else — names, attributes, subscripts, strings, comprehensions, lambdas,
keyword arguments, other calls — is refused before any evaluation happens.

Results: integer arithmetic stays exact (``2**100`` is an int). ``/`` is true division;
a float result that is a whole number below 2**53 is returned as an int (``6/2`` gives
3), other floats are rounded to 15 significant digits so that binary noise does not
show (``0.1+0.2`` gives 0.3).

Error handling: every refusal is a ``ValueError`` naming the problem: an unsupported
construct, division by zero, a result with no real value, or a limit (expression
longer than 500 characters, integer results beyond 1000 digits, powers that would
exceed that, non-finite floats). Limits are checked *before* the costly operation, so
``9**9**9`` is refused at once instead of exhausting memory.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable

__all__ = ["evaluate"]

Number = int | float

MAX_EXPRESSION_CHARS = 500
# 1000 decimal digits: plenty for a calculator, far below CPython's 4300-digit str limit.
MAX_INT_DIGITS = 1000
_MAX_INT_BITS = int(MAX_INT_DIGITS * math.log2(10)) + 1
MAX_FACTORIAL = 450  # 450! has 1001 digits; anything larger breaks the digit limit anyway

_CONSTANTS: dict[str, Number] = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _factorial(n: Number) -> int:
    if isinstance(n, float):
        if not n.is_integer():
            raise ValueError("factorial() needs a whole number")
        n = int(n)
    if n < 0:
        raise ValueError("factorial() needs a number >= 0")
    if n > MAX_FACTORIAL:
        raise ValueError(f"factorial() is limited to n <= {MAX_FACTORIAL}")
    return math.factorial(n)


def _round(x: Number, ndigits: Number | None = None) -> Number:
    if ndigits is None:
        return round(x)
    if isinstance(ndigits, float):
        if not ndigits.is_integer():
            raise ValueError("round()'s second argument must be a whole number")
        ndigits = int(ndigits)
    if abs(ndigits) > 100:
        raise ValueError("round()'s second argument must be between -100 and 100")
    return round(x, ndigits)


# name -> (function, minimum number of arguments, maximum number of arguments or None)
_FUNCTIONS: dict[str, tuple[Callable[..., Number], int, int | None]] = {
    "abs": (abs, 1, 1),
    "round": (_round, 1, 2),
    "min": (min, 2, None),
    "max": (max, 2, None),
    "sqrt": (math.sqrt, 1, 1),
    "exp": (math.exp, 1, 1),
    "log": (math.log, 1, 2),
    "log2": (math.log2, 1, 1),
    "log10": (math.log10, 1, 1),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
    "sin": (math.sin, 1, 1),
    "cos": (math.cos, 1, 1),
    "tan": (math.tan, 1, 1),
    "asin": (math.asin, 1, 1),
    "acos": (math.acos, 1, 1),
    "atan": (math.atan, 1, 1),
    "degrees": (math.degrees, 1, 1),
    "radians": (math.radians, 1, 1),
    "hypot": (math.hypot, 1, None),
    "factorial": (_factorial, 1, 1),
}

_BINARY_SYMBOLS: dict[type[ast.operator], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
}


def evaluate(expression: str) -> dict[str, object]:
    """Evaluate an arithmetic ``expression`` safely; see the module docstring."""
    if not isinstance(expression, str):
        raise ValueError("expression must be a string such as '17*23'")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(
            f"expression is {len(expression)} characters long; the limit is {MAX_EXPRESSION_CHARS}"
        )
    if not expression.strip():
        raise ValueError("expression is empty; try something like '17*23' or '2^10'")
    source = expression.strip().replace("^", "**")
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not a valid arithmetic expression: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise ValueError("expression is nested too deeply") from None
    try:
        result = _eval(tree.body)
    except ZeroDivisionError:
        raise ValueError("division by zero") from None
    except OverflowError:
        raise ValueError("result is too large to represent") from None
    except RecursionError:
        raise ValueError("expression is nested too deeply") from None
    return {"expression": expression, "result": _present(result)}


def _eval(node: ast.AST) -> Number:
    if isinstance(node, ast.Constant):
        value = node.value
        # bool is an int subclass; True + 1 is not arithmetic a user meant.
        if isinstance(value, int | float) and not isinstance(value, bool):
            return _checked(value)
        raise ValueError(f"only numbers are allowed, not {value!r}")
    if isinstance(node, ast.BinOp):
        symbol = _BINARY_SYMBOLS.get(type(node.op))
        if symbol is None:
            raise ValueError(f"operator {type(node.op).__name__} is not supported")
        left = _eval(node.left)
        right = _eval(node.right)
        return _checked(_binary(symbol, left, right))
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand)
        if isinstance(node.op, ast.USub):
            return -operand
        if isinstance(node.op, ast.UAdd):
            return +operand
        raise ValueError(f"operator {type(node.op).__name__} is not supported")
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise ValueError(f"unknown name {node.id!r}; {_allowed_names()}")
    if isinstance(node, ast.Call):
        return _checked(_call(node))
    raise ValueError(f"{type(node).__name__} is not allowed in an arithmetic expression")


def _call(node: ast.Call) -> Number:
    if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
        shown = node.func.id if isinstance(node.func, ast.Name) else "this call"
        raise ValueError(f"function {shown!r} is not allowed; {_allowed_names()}")
    name = node.func.id
    if node.keywords:
        raise ValueError(f"{name}() takes no keyword arguments")
    if any(isinstance(arg, ast.Starred) for arg in node.args):
        raise ValueError(f"{name}() does not accept *arguments")
    function, least, most = _FUNCTIONS[name]
    count = len(node.args)
    if count < least or (most is not None and count > most):
        wanted = (
            str(least)
            if least == most
            else f"{least} or more"
            if most is None
            else (f"{least} to {most}")
        )
        raise ValueError(f"{name}() takes {wanted} argument(s), got {count}")
    args = [_eval(arg) for arg in node.args]
    if name in ("factorial", "round"):  # their ValueErrors already say what is wrong
        return function(*args)
    # math's domain errors say only "math domain error"; name the function instead.
    try:
        return function(*args)
    except ValueError:
        shown = ", ".join(_format(a) for a in args)
        raise ValueError(f"{name}({shown}) has no real result") from None


def _binary(symbol: str, left: Number, right: Number) -> Number:
    if symbol == "+":
        return left + right
    if symbol == "-":
        return left - right
    if symbol == "*":
        return left * right
    if symbol == "/":
        return left / right
    if symbol == "//":
        return left // right
    if symbol == "%":
        return left % right
    return _power(left, right)


def _power(base: Number, exponent: Number) -> Number:
    # Estimate the size of the result before computing it: |base|**exponent has about
    # exponent*log2(|base|) bits. Floats overflow to OverflowError on their own, but an
    # exact int power like 9**9**9 would happily allocate gigabytes.
    exact = isinstance(base, int) and isinstance(exponent, int)
    if (
        exact
        and exponent > 0
        and abs(base) > 1
        and (exponent > _MAX_INT_BITS or exponent * math.log2(abs(base)) > _MAX_INT_BITS)
    ):
        raise ValueError(
            f"{_format(base)} ** {_format(exponent)} is too large (results are "
            f"limited to about {MAX_INT_DIGITS} digits)"
        )
    result = base**exponent
    if isinstance(result, complex):
        raise ValueError(
            f"{_format(base)} ** {_format(exponent)} has no real result "
            "(a negative number to a fractional power)"
        )
    return result


def _checked(value: Number) -> Number:
    if isinstance(value, int):
        if value.bit_length() > _MAX_INT_BITS:
            raise ValueError(f"result is too large (limited to about {MAX_INT_DIGITS} digits)")
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("result is too large to represent (not a finite number)")
    return value


def _present(value: Number) -> Number:
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 2**53:
            return int(value)
        # 15 significant digits always round-trip through a double, and hide the
        # last-bit noise of binary floating point (0.1 + 0.2).
        return float(f"{value:.15g}")
    return value


def _format(value: Number) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:20] + "..."


def _allowed_names() -> str:
    return (
        "allowed are the constants "
        + ", ".join(sorted(_CONSTANTS))
        + " and the functions "
        + ", ".join(sorted(_FUNCTIONS))
    )
