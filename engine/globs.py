"""The one glob syntax of the configuration: policy targets (tool names, resource URIs) and file:// globs.

- ``**`` matches any run of characters, ``/`` included;
- ``*`` matches any run of characters within one segment (not ``/``);
- ``?`` matches one character other than ``/``;
- every other character is literal, ``[`` and ``]`` included (no character
  classes: tool names and URIs never need them, and fnmatch's ``[`` rules
  differ between implementations).

A pattern matches the whole name or URI, never a part of it.
"""

from __future__ import annotations

import functools
import re

GLOB_CHARS = frozenset("*?")


@functools.lru_cache(maxsize=1024)
def glob_regex(pattern: str) -> re.Pattern[str]:
    out = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**", index):
            out.append(".*")
            index += 2
        elif pattern[index] == "*":
            out.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            out.append("[^/]")
            index += 1
        else:
            out.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(out), re.DOTALL)


def glob_matches(pattern: str, text: str) -> bool:
    """Whether ``pattern`` matches all of ``text``."""
    return glob_regex(pattern).fullmatch(text) is not None
