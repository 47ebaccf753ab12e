"""Text made safe for a terminal or a log line: control characters shown, never obeyed.

Anything a client chose (a subject, a tool argument, a reason, an error message) can
carry ANSI escape sequences, carriage returns or newlines that would forge lines in
``sconnect audit tail`` or a chat transcript. Every human-readable output passes such
text through :func:`printable` first; machine output (JSON) needs nothing, its encoder
already escapes control characters.
"""

from __future__ import annotations

import unicodedata

__all__ = ["has_control", "printable"]

# Categories shown escaped: Cc (C0, DEL, C1 controls), Cf (format characters such as the
# bidirectional overrides U+202E that reorder what a reader sees), Zl/Zp (line and
# paragraph separators, which some terminals break lines on).
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control or format character written as a ``\\xNN`` / ``\\uNNNN``
    escape (a backslash itself is kept as is). ``keep_newlines`` leaves ``\\n`` alone,
    for multi-line bodies such as an agent's answer; ``\\r`` is always escaped, since it
    lets a line overwrite what came before it."""
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char == "\n" and keep_newlines:
            out.append(char)
        elif char == "\t" and keep_newlines:
            out.append(char)
        elif unicodedata.category(char) in _ESCAPED_CATEGORIES:
            out.append(_escape(char))
        else:
            out.append(char)
    return "".join(out)


def has_control(text: str) -> bool:
    """Whether ``text`` holds any character :func:`printable` would escape (newlines and
    tabs included)."""
    return any(unicodedata.category(char) in _ESCAPED_CATEGORIES for char in text)
