"""Tests for sconnect_tools.calc: what it computes and everything it refuses."""

from __future__ import annotations

import time

import pytest

from sconnect_tools import calc


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("17*23", 391),
        ("2^10", 1024),
        ("2**10", 1024),
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("-3 + +5", 2),
        ("7 / 2", 3.5),
        ("6 / 2", 3),
        ("7 // 2", 3),
        ("-7 // 2", -4),
        ("7 % 3", 1),
        ("2 ** -1", 0.5),
        ("0.1 + 0.2", 0.3),
        ("1_000 * 3", 3000),
        ("1e3 + 1", 1001),
        ("sqrt(16)", 4),
        ("sqrt(2)", 1.4142135623731),
        ("abs(-4.5)", 4.5),
        ("round(3.14159, 2)", 3.14),
        ("round(2.5)", 2),
        ("min(3, 1, 2) + max(4, 9)", 10),
        ("floor(2.7) + ceil(2.1)", 5),
        ("log(e)", 1),
        ("log(8, 2)", 3),
        ("factorial(10)", 3628800),
        ("2 * pi", 6.28318530717959),
        ("2 ^ 3 ^ 2", 512),  # right-associative, like **
    ],
)
def test_evaluates(expression: str, expected: float) -> None:
    result = calc.evaluate(expression)
    assert result == {"expression": expression, "result": expected}
    assert type(result["result"]) is type(expected)


def test_integers_stay_exact() -> None:
    assert calc.evaluate("2**100")["result"] == 2**100
    assert calc.evaluate("12345678901234567890 * 98765432109876543210")["result"] == (
        12345678901234567890 * 98765432109876543210
    )


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os')", "function '__import__' is not allowed"),
        ("__import__('os').system('id')", "not allowed"),
        ("x + 1", "unknown name 'x'"),
        ("os", "unknown name 'os'"),
        ("(1).__class__", "Attribute is not allowed"),
        ("'a' * 3", "only numbers"),
        ("[1, 2]", "List is not allowed"),
        ("[x for x in (1, 2)]", "ListComp is not allowed"),
        ("lambda: 1", "Lambda is not allowed"),
        ("True + 1", "only numbers"),
        ("1j * 2", "only numbers"),
        ("1 < 2", "Compare is not allowed"),
        ("1 << 100", "LShift is not supported"),
        ("~1", "Invert is not supported"),
        ("abs(x=1)", "no keyword arguments"),
        ("max(*(1, 2))", "does not accept"),
        ("min(1)", "2 or more"),
        ("sqrt(1, 2)", "takes 1 argument"),
        ("1/0", "division by zero"),
        ("1 // 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("sqrt(-1)", "sqrt\\(-1\\) has no real result"),
        ("(-8) ** 0.5", "no real result"),
        ("9**9**9", "too large"),
        ("2**10000", "too large"),
        ("10**500 * 10**600", "too large"),
        ("factorial(100000)", "limited to n <= 450"),
        ("2.0 ** 5000", "too large"),
        ("1e308 * 10", "too large"),
        ("exp(1000)", "too large"),
        ("1 +", "not a valid arithmetic expression"),
        ("", "empty"),
        ("1" * 501, "limit is 500"),
        ("(" * 240 + "1" + ")" * 240, "nested|not a valid"),
    ],
)
def test_refuses(expression: str, message: str) -> None:
    started = time.monotonic()
    with pytest.raises(ValueError, match=message):
        calc.evaluate(expression)
    assert time.monotonic() - started < 1  # refused up front, not after the work


def test_refuses_non_string() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        calc.evaluate(17)  # type: ignore[arg-type]


def test_runs_in_sandbox_python(run_tool) -> None:
    ok = run_tool("calc", "evaluate", {"expression": "17*23"})
    assert ok.returncode == 0, ok.stderr
    assert ok.result == {"expression": "17*23", "result": 391}
    for bad in ["__import__('os').system('id')", "9**9**9", "1/0"]:
        refused = run_tool("calc", "evaluate", {"expression": bad})
        assert refused.returncode == 1
        assert refused.stderr.startswith("ValueError: ")


def test_long_unary_chain_within_the_limit_still_works() -> None:
    assert calc.evaluate("-" * 499 + "1")["result"] == -1
