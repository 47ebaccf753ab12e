"""Where the chat writes: a terminal or pipe for people, or one JSON object per event.

Human mode: every text a server or another user chose (tokens, names, arguments,
reasons, resource contents) passes through :func:`engine.printable.printable`, so
control characters are shown escaped, never obeyed.  Colour is used when stdout is
a terminal, ``NO_COLOR`` is not set and ``TERM`` is not ``dumb``.

JSON mode (``--json``): each server frame is written as its wire form (one line),
and what the chat itself says as ``{"type": "chat", "event": ..., "message": ...}``;
prompts and the human rendering are left out.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from ...printable import printable

if TYPE_CHECKING:
    from ...protocol import ServerFrame

_CODES = {"red": "31", "green": "32", "yellow": "33", "blue": "34", "magenta": "35", "cyan": "36", "dim": "2",
          "bold": "1"}


def wants_colour(stream: TextIO) -> bool:
    """Colour for terminals, unless ``NO_COLOR`` (https://no-color.org) or a dumb terminal says no."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@attrs.define(eq=False)
class Output:
    """Writes for people (``json`` False) or scripts, remembering whether the cursor is mid-line."""

    stream: TextIO
    json: bool = False
    colour: bool = False
    mid_line: bool = False

    # --- human text (nothing in JSON mode) ----------------------------------------------

    def write(self, text: str) -> None:
        """Text as it is (a token, a prompt), flushed at once; already made printable by the caller."""
        if text and not self.json:
            self.stream.write(text)
            self.stream.flush()
            self.mid_line = not text.endswith("\n")

    def line(self, text: str) -> None:
        """A line of its own, starting a new line first if needed."""
        self.end_line()
        self.write(text + "\n")

    def end_line(self) -> None:
        if self.mid_line:
            self.write("\n")

    def paint(self, text: str, colour: str) -> str:
        """``text`` in ``colour`` when colour is on."""
        if not self.colour or not text:
            return text
        return f"\x1b[{_CODES[colour]}m{text}\x1b[0m"

    # --- both modes ---------------------------------------------------------------------

    def frame(self, frame: ServerFrame) -> None:
        """A server frame: its wire form in JSON mode (the human rendering is the caller's)."""
        if self.json:
            from ...protocol import encode

            self._json_line(encode(frame))

    def note(self, event: str, message: str, *, colour: str | None = None, **fields: Any) -> None:
        """Something the chat itself says: a line for people, an object for scripts."""
        if self.json:
            self._json_line(json.dumps({"type": "chat", "event": event, "message": message, **fields},
                                       ensure_ascii=False, default=str))
        else:
            self.line(self.paint(message, colour) if colour else message)

    def _json_line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


def shown(text: str) -> str:
    """One line of foreign text, control characters escaped."""
    return printable(text)


def shown_body(text: str) -> str:
    """Multi-line foreign text (an answer, a file): newlines and tabs kept, other controls escaped."""
    return printable(text, keep_newlines=True)
