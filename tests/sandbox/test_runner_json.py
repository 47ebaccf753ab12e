"""The runner's JSON: `_json`'s C scanner and encoder, without the `json` package.

The runner reads a Python tool's arguments and writes its result with the C half of
`json` directly, so that neither a fresh runner nor a pool's fork server (and every
worker it forks) imports json, re, enum and the rest. These tests hold it to json.loads
and json.dumps:

- test_runner_imports_no_json: importing the runner in a bare ``python3 -S -I`` leaves
  `json` and `re` out of sys.modules.
- test_same_values_and_errors_as_json: in that interpreter, `_json_loads` and
  `_json_dumps` give what json.loads/json.dumps give (the same repr, or the same
  exception type and message) for documents with every kind of value, whitespace,
  UTF-8, lone surrogates, a BOM, UTF-16, invalid documents and bytes, and for values
  json cannot encode (objects, tuple keys, sets, a circular list), one after another
  in one process (a failed encoding leaves nothing behind that breaks the next).
- test_arguments_and_results_round_trip: on every backend that runs a Python function,
  a call of ``builtins:dict`` returns its arguments (nested, unicode, floats, big
  integers) unchanged.
- test_unencodable_result_is_jsons_error: a function returning a value json cannot
  encode fails with json's own message as the last line of its traceback.
"""

from __future__ import annotations

import subprocess
from typing import Any

import sandbox
from tests.conftest import REPO

PROBE = r"""
import sys
sys.path.insert(0, sys.argv[1])
import _runner
print("json" in sys.modules, "re" in sys.modules)
import json

documents = [
    b'{"a": [1, 2.5, "x", null, true, {"b": false}]}', b" 1 ", b"NaN", b"[Infinity, -Infinity]",
    b'"\\ud800"', b'{"a":1}  \n', b"\xef\xbb\xbf{}", '{"a": "\u00e9"}'.encode("utf-16"),
    '{"a": "\u00e9\u4e2d"}'.encode(), b"\t[1e5, -0.0, 12345678901234567890, 1e400]\r\n", ' {"s": 3} ',
    b"{", b"1 2", b"[1,]", b'"\\x"', b"\xff", b'{"a" 1}', b"\x80", b"", "", b"  ", b"[" * 100000,
    b'"\x00"', b"\x00\x001", b"1" * 5000, b"nul", b'{"a": 1,}',
]
for document in documents:
    try:
        want = repr(json.loads(document))
    except Exception as exc:
        want = type(exc).__name__ + ": " + str(exc)
    try:
        got = repr(_runner._json_loads(document))
    except Exception as exc:
        got = type(exc).__name__ + ": " + str(exc)
    assert got == want, (document[:50], got, want)

circular = []
circular.append(circular)
values = [
    1, "x\u00e9", "", [1.5, float("nan"), None, True, float("inf"), -0.0], {"a": {1: 2, None: 3, 1.5: 4, True: 5}},
    (1, 2), 10**30, {}, [], object(), {(1, 2): 3}, circular, {1: {2, 3}}, [1, [2, object()]], {"ok": [1]},
]
for value in values:
    try:
        want = json.dumps(value)
    except Exception as exc:
        want = type(exc).__name__ + ": " + str(exc)
    try:
        got = _runner._json_dumps(value)
    except Exception as exc:
        got = type(exc).__name__ + ": " + str(exc)
    assert got == want, (value, got, want)
print("same")
"""


def _probe() -> list[str]:
    done = subprocess.run(
        ["/usr/bin/python3", "-S", "-I", "-c", PROBE, str(REPO / "sandbox")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_runner_imports_no_json() -> None:
    assert _probe()[0] == "False False"


def test_same_values_and_errors_as_json() -> None:
    assert _probe()[-1] == "same"


async def test_arguments_and_results_round_trip(any_tool: Any) -> None:
    arguments = {
        "text": "caf\u00e9 \u4e2d \U0001f600", "nested": {"list": [1, -0.5, 1e300, None, True, False, []]},
        "big": 2**70, "empty": {}, "quote": 'a "b" \\ c\n',
    }  # fmt: skip
    async with sandbox.open_pools():
        result = await any_tool.run(arguments, python="builtins:dict")
    assert result.status == "ok", result
    assert result.output == arguments


async def test_unencodable_result_is_jsons_error(any_tool: Any) -> None:
    async with sandbox.open_pools():
        result = await any_tool.run({}, python="builtins:object")
    assert result.status == "error" and result.exit_code == 1, result
    last = result.stderr_tail.strip().splitlines()[-1]
    assert last == "TypeError: Object of type object is not JSON serializable", result.stderr_tail
