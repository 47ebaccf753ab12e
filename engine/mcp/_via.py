"""The stdio bridge's note to the server on how a call came in, for the audit log.

The bridge connects to the WebSocket endpoint once per ``tools/call`` with an
``X-Sconnect-Via`` header (ASCII JSON): the transport (``mcp-stdio``), the MCP request
id and the MCP client's self-reported name.  The server adds them to the ``details``
of the audit records of that connection's actions.  They are the client's word, like
any self-reported name: only these keys, strings only, bounded in length.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

VIA_HEADER = "X-Sconnect-Via"
_KEYS = {"transport": ("mcp-stdio",), "mcp_request_id": None, "mcp_client": None}
_MAX_VALUE = 200
_MAX_HEADER = 1024


def via_header(request_id: Any, client: str | None) -> tuple[str, str]:
    note: dict[str, str] = {"transport": "mcp-stdio", "mcp_request_id": str(request_id)[:_MAX_VALUE]}
    if client:
        note["mcp_client"] = client[:_MAX_VALUE]
    return VIA_HEADER, json.dumps(note, ensure_ascii=True, separators=(",", ":"))


def parse_via(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The audit details a handshake's ``X-Sconnect-Via`` header asks for; {} when absent or malformed."""
    name = VIA_HEADER.lower().encode()
    for key, value in headers:
        if key.lower() != name or len(value) > _MAX_HEADER:
            continue
        try:
            note = json.loads(value.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return {}
        if not isinstance(note, dict):
            return {}
        found: dict[str, str] = {}
        for field, allowed in _KEYS.items():
            item = note.get(field)
            if isinstance(item, str) and len(item) <= _MAX_VALUE and (allowed is None or item in allowed):
                found[field] = item
        return found if "transport" in found else {}
    return {}
