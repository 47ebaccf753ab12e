"""`Result`: what one sandboxed call produced, and how raw output becomes a Result.

Output decoding never raises: stdout that is valid JSON is returned parsed; anything
else (plain text, invalid UTF-8 decoded with replacement characters) is wrapped as
``{"text": ...}``; empty stdout is ``None``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import attrs

Status = Literal["ok", "error", "timeout", "cancelled", "limit_exceeded"]


@attrs.frozen
class Result:
    """The outcome of one call. `status` is the only field the engine must branch on."""

    status: Status
    output: Any  # parsed JSON from stdout; plain text as {"text": ...}; None when empty
    stderr_tail: str  # the last max_stderr_bytes of stderr, decoded with replacement
    exit_code: int | None  # None when killed by a signal or never started
    signal: int | None  # the signal that ended the tool, when one did
    wall_time_s: float
    # user + system CPU of the tool's process tree; 0.0 = not measured (namespaces backend
    # with argv tools: bwrap never reaps the namespace's pid 1, so no rusage reaches us)
    cpu_time_s: float
    # max RSS of any process of the call; 0 = not measured (namespaces + argv, as above;
    # the process backend's figure includes the ~10 MB runner the tool was forked from).
    # Where the call had a memory cgroup, its peak charge when higher (all its processes,
    # tmpfs pages and page cache together)
    peak_memory_bytes: int
    truncated: bool  # stdout exceeded max_output_bytes; the excess was discarded
    backend: str  # "namespaces" | "process" | a later backend's name
    message: str  # human summary, e.g. "killed after 5s timeout"
    # MCP content blocks, checked by the engine (engine/protocol/content.py), when the tool
    # returned them; ``output`` is then what models and older clients read. None otherwise.
    content: tuple[Any, ...] | None = None


def decode_text(data: bytes) -> str:
    """UTF-8 with replacement characters: tool output never makes decoding fail."""
    return data.decode("utf-8", errors="replace")


def parse_output(data: bytes, *, truncated: bool) -> Any:
    """Parse stdout per the tool contract (JSON, else wrapped text, never an exception)."""
    text = decode_text(data)
    if not text.strip():
        return None
    if not truncated:
        try:
            return json.loads(text)
        except ValueError:
            pass
    return {"text": text}
