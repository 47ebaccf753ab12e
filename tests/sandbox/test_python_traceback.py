"""A failing Python function tool's traceback, on every backend that runs one.

The runner prints it with the interpreter's own display (`sys.__excepthook__`) rather
than the `traceback` module, so that neither a fresh runner nor a pool worker imports
`traceback`, `linecache` and `tokenize` for it. These tests hold it to what
`traceback.print_exc()` gave:

- test_traceback_has_frames_source_and_cause: a function that raises from inside an
  `except` (`raise ... from exc`) fails with status `error`, exit code 1, and a stderr
  holding both tracebacks, the frames' function names and source lines, the "direct
  cause" separator and, last, ``ValueError: bad bob``.
- test_traceback_of_an_exception_group: an ExceptionGroup with a note on a member is
  shown as a group (its members boxed, the note under its member).
"""

from __future__ import annotations

import os
import textwrap
from typing import Any

import pytest

import sandbox

SOURCE = '''
def lookup(name):
    return {"ada": 1}[name]


def fail(name):
    try:
        lookup(name)
    except KeyError as exc:
        raise ValueError("bad " + name) from exc


def group():
    member = TypeError("wrong type")
    member.add_note("a note on the member")
    raise ExceptionGroup("several", [member, KeyError("k")])
'''


@pytest.fixture
def failing_package(shared_dir: str) -> str:
    root = os.path.join(shared_dir, "pkgs", "failing_tools")
    os.makedirs(root)
    os.chmod(os.path.dirname(root), 0o755)
    os.chmod(root, 0o755)
    for name, text in (("__init__.py", ""), ("broken.py", textwrap.dedent(SOURCE))):
        path = os.path.join(root, name)
        with open(path, "w") as handle:
            handle.write(text)
        os.chmod(path, 0o644)
    return root


async def test_traceback_has_frames_source_and_cause(any_tool: Any, failing_package: str) -> None:
    async with sandbox.open_pools():
        result = await any_tool.run(
            {"name": "bob"}, python="failing_tools.broken:fail", python_packages=(failing_package,)
        )
    assert result.status == "error" and result.exit_code == 1, result
    lines = result.stderr_tail.strip().splitlines()
    assert lines[-1] == "ValueError: bad bob", result.stderr_tail
    text = "\n".join(lines)
    assert text.count("Traceback (most recent call last):") == 2, text
    assert "The above exception was the direct cause of the following exception:" in text
    assert "KeyError: 'bob'" in text
    for frame, source in (("lookup", 'return {"ada": 1}[name]'), ("fail", 'raise ValueError("bad " + name) from exc')):
        assert f", in {frame}" in text and source in text, (frame, text)


async def test_traceback_of_an_exception_group(any_tool: Any, failing_package: str) -> None:
    async with sandbox.open_pools():
        result = await any_tool.run({}, python="failing_tools.broken:group", python_packages=(failing_package,))
    assert result.status == "error" and result.exit_code == 1, result
    text = result.stderr_tail
    assert "ExceptionGroup: several (2 sub-exceptions)" in text, text
    assert "TypeError: wrong type" in text and "a note on the member" in text
    assert text.index("TypeError: wrong type") < text.index("a note on the member") < text.index("KeyError: 'k'")
