"""Path-style globs shared by policies (resource URIs) and file:// hosts (allowed paths).

``**`` crosses ``/``; ``*`` and ``?`` stay within one segment; everything else is literal.
"""

from __future__ import annotations

import functools
import re


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
