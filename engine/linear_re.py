"""Regular expressions that run on client text: RE2, whose matching time is linear in the text.

Python's ``re`` backtracks: ``\\b(?:list|show)\\b.*\\bfiles\\b`` is quadratic in the text
and ``^(a+)+$`` exponential, and a search holds the event loop (and the GIL) until it
ends.  Every pattern that an operator or a client writes and that is then matched
against what a user sends (agent rules, ``pattern`` / ``patternProperties`` in tool
schemas) is compiled here instead.

What RE2 refuses -- backreferences (``\\1``), lookarounds (``(?=``, ``(?<!``), possessive
and atomic groups -- raises :class:`RegexError` when the pattern is compiled, so that a
configuration using them is refused at load time with the reason, never at match time.
RE2 differs from ``re`` in small ways worth knowing: ``\\b``, ``\\w``, ``\\d`` and ``\\s``
are ASCII-only, and ``$`` matches only at the very end of the text (``re`` also matches
before a final newline).  The syntax is RE2's (https://github.com/google/re2/wiki/Syntax).
"""

from __future__ import annotations

import functools
from typing import Any

import re2  # type: ignore[import-untyped]

__all__ = ["LinearPattern", "RegexError", "compile_linear"]

# RE2 refuses to build an automaton larger than this (bytes): a counted repetition such
# as (a{1000}){1000} is an error at compile time instead of a memory or time sink.
_MAX_MEM = 8 << 20

LinearPattern = Any  # re2._Regexp: search/match/fullmatch/groupindex like re.Pattern


class RegexError(ValueError):
    """A pattern RE2 cannot compile; the message says why (RE2's own words)."""


def _options() -> Any:
    options = re2.Options()
    # RE2 would also print every refused pattern to stderr through absl logging.
    options.log_errors = False
    options.max_mem = _MAX_MEM
    return options


_OPTIONS = _options()


@functools.lru_cache(maxsize=4096)
def compile_linear(pattern: str) -> LinearPattern:
    """The compiled pattern (cached); :class:`RegexError` when RE2 cannot run it."""
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise RegexError(
            f"{reason} (patterns run on RE2, a linear-time engine: no backreferences or lookarounds)"
        ) from None
