"""Suggestions for mistyped names: "did you mean ..." and the list of known ones."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["unknown_name"]

# Past this many known names the list is cut: a message stays one readable line.
_LISTED = 20


def unknown_name(kind: str, name: str, known: Iterable[str]) -> str:
    """``no agent named 'asistant' (did you mean 'assistant'? known: assistant, bookkeeper)``."""
    names = sorted(set(known))
    text = f"no {kind} named {name!r}"
    if not names:
        return f"{text} (none is declared)"
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    listed = ", ".join(names[:_LISTED]) + (f", ... ({len(names)} in all)" if len(names) > _LISTED else "")
    return f"{text} ({hint}known: {listed})"
