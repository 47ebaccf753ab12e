"""What a read returns, and how a host is described to clients (``resource_list``)."""

from __future__ import annotations

import mimetypes

import attrs


@attrs.frozen
class Content:
    """A resource's content: text as ``str``, anything else as ``bytes``."""

    uri: str
    mime_type: str
    data: str | bytes
    truncated: bool


@attrs.frozen
class Template:
    """A readable URI template such as ``db://users/profile/{id}``, with its host key."""

    uri_template: str
    description: str
    host: str


def as_content(uri: str, raw: bytes, truncated: bool, mime_type: str | None = None) -> Content:
    """Text when the bytes are UTF-8 (a cut in the middle of a character is dropped), else bytes."""
    mime = mime_type or mimetypes.guess_type(uri)[0] or "application/octet-stream"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if truncated and exc.start >= len(raw) - 3 and exc.reason == "unexpected end of data":
            text = raw[: exc.start].decode("utf-8")
        else:
            return Content(uri, mime, raw, truncated)
    if mime == "application/octet-stream":
        mime = "text/plain"
    return Content(uri, mime, text, truncated)
