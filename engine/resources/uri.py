"""Strict parsing of resource URIs: ``scheme://host/path``.

Refused before anything is looked up: a scheme or host that is not a plain
lower-case name; a query or fragment; ``..`` or ``.`` segments; empty segments
(``//``, which would make a path absolute); percent-encoded dots, slashes or
backslashes (``%2e``, ``%2f``, ``%5c``); backslashes; NUL and other control
characters; a ``%`` not followed by two hex digits, and escapes that do not
decode as UTF-8 (``%ff``, the overlong ``%c0%ae``).  Other percent escapes are
decoded once, and a decoded segment is checked again.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

import attrs

from .errors import BadURI

_HEAD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>[a-z][a-z0-9_-]*)(?P<rest>/.*)?", re.S)
_FORBIDDEN_ESCAPES = re.compile(r"%(2e|2f|5c|00)", re.I)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BARE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_MAX_URI = 4096


@attrs.frozen
class ResourceURI:
    scheme: str
    host: str
    segments: tuple[str, ...]

    @property
    def path(self) -> str:
        return "/".join(self.segments)

    @property
    def key(self) -> str:
        """``scheme://host``, the name a resource host is declared under."""
        return f"{self.scheme}://{self.host}"

    def __str__(self) -> str:
        return f"{self.key}/{self.path}" if self.segments else self.key


def parse_uri(text: str) -> ResourceURI:
    """Parse ``text`` or raise :class:`BadURI` saying what is wrong with it."""
    if len(text) > _MAX_URI:
        raise BadURI(f"the URI is longer than {_MAX_URI} characters")
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        raise BadURI("the URI contains control characters")
    if "\\" in text:
        raise BadURI("backslashes are not allowed in resource URIs")
    match = _HEAD.fullmatch(text)
    if match is None:
        raise BadURI(f"{text!r} is not of the form scheme://host/path")
    rest = match["rest"] or ""
    if "?" in rest or "#" in rest:
        raise BadURI("resource URIs take no query or fragment")
    if _FORBIDDEN_ESCAPES.search(rest):
        raise BadURI("percent-encoded dots, slashes, backslashes and NUL are not allowed")
    raw = rest[1:].split("/") if rest else []
    if raw == [""]:
        raw = []
    segments = []
    for part in raw:
        if part == "":
            raise BadURI("empty path segments ('//') are not allowed")
        if _BARE_PERCENT.search(part):
            raise BadURI(f"the path segment {part!r} has a '%' that is not a percent-escape (%XX)")
        try:
            decoded = unquote(part, errors="strict")
        except UnicodeDecodeError:
            raise BadURI(f"the path segment {part!r} has percent-escapes that are not UTF-8") from None
        if decoded in (".", "..") or "/" in decoded or "\\" in decoded or _CONTROL.search(decoded):
            raise BadURI(f"the path segment {part!r} is not allowed")
        segments.append(decoded)
    return ResourceURI(match["scheme"], match["host"], tuple(segments))
