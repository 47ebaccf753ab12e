"""The conformance suite's tool fixtures: each returns MCP content blocks (``output: content``).

Standard library only, like every Python tool: the PNG and the WAV are made here with
zlib and struct, so nothing binary is shipped.
"""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def red_pixel_png() -> bytes:
    """A 1x1 red PNG (8-bit RGB): signature, IHDR, one filtered scanline in IDAT, IEND."""
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    scanline = b"\x00\xff\x00\x00"  # filter 0, then R G B
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(scanline))
        + _png_chunk(b"IEND", b"")
    )


def silent_wav(samples: int = 800, rate: int = 8000) -> bytes:
    """A tenth of a second of silence: RIFF/WAVE, PCM, mono, 8 bits (the value 128 is silence)."""
    data = b"\x80" * samples
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate, 1, 8)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def simple_text() -> dict[str, Any]:
    return {"content": [{"type": "text", "text": "This is a simple text response for testing."}]}


def error_handling() -> dict[str, Any]:
    raise RuntimeError("This tool intentionally returns an error for testing")


def image() -> dict[str, Any]:
    return {"content": [{"type": "image", "data": _b64(red_pixel_png()), "mimeType": "image/png"}]}


def audio() -> dict[str, Any]:
    return {"content": [{"type": "audio", "data": _b64(silent_wav()), "mimeType": "audio/wav"}]}


def embedded_resource() -> dict[str, Any]:
    resource = {
        "uri": "test://embedded-resource",
        "mimeType": "text/plain",
        "text": "This is an embedded resource content.",
    }
    return {"content": [{"type": "resource", "resource": resource}]}


def mixed() -> dict[str, Any]:
    resource = {
        "uri": "test://mixed-content-resource",
        "mimeType": "application/json",
        "text": '{"test":"data","value":123}',
    }
    return {
        "content": [
            {"type": "text", "text": "Multiple content types test:"},
            {"type": "image", "data": _b64(red_pixel_png()), "mimeType": "image/png"},
            {"type": "resource", "resource": resource},
        ]
    }


def echo_person(name: str = "", address: dict[str, str] | None = None) -> dict[str, Any]:
    """The JSON Schema 2020-12 fixture: what it was given, as plain JSON."""
    return {"name": name, "address": address or {}}
