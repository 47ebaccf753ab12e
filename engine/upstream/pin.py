"""Pinning: what an MCP server offers now, compared with what its tool file pinned, and
writing the pins into the file while keeping the rest of its text as it was.

`list_definitions` starts the server once in the file's sandbox and lists its tools.
`compare` says, for each allowed tool, whether it is new, unchanged, changed or gone.
`write_pins` rewrites only the ``pinned:`` block of each allowed tool (inserted after
the tool's last line when absent); comments, key order and everything else in the
file stay byte for byte. A tool written in flow style (``echo: {permission_level: 0}``)
is rewritten in block style, the one place where text changes beyond the pin.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import attrs
import yaml

from ..config.model import McpServerFile, PinnedDefinition
from ._connection import Definition, open_connection
from ._manager import server_spec

Status = Literal["new", "unchanged", "changed", "missing"]


@attrs.frozen
class Comparison:
    upstream: str
    status: Status
    listed: Definition | None
    message: str


async def list_definitions(server_file: McpServerFile, *, work_root: Path | None = None) -> dict[str, Definition]:
    """Start the server once (sandboxed, like a call), list its tools, stop it.

    Raises StartFailed (and sandbox errors) when it cannot be started.
    """
    from ..config.model import UpstreamRef

    root = Path(work_root or os.path.join(tempfile.gettempdir(), f"sconnect-sandbox-{os.geteuid()}"))
    workspace = Path(tempfile.mkdtemp(prefix="sconnect-pin-"))
    try:
        os.chmod(workspace, 0o711)
        if os.geteuid() == 0:
            import sandbox

            os.chown(workspace, sandbox.SANDBOX_UID, sandbox.SANDBOX_GID)
        server = server_file.mcp_server
        first = next(iter(server.tools))
        ref = UpstreamRef(
            name=server_file.exposed_name(first), file=server_file.source.file, server=server, tool=first,
            sandbox=server_file.sandbox, pinned=PinnedDefinition("", "", {}),
        )
        spec = server_spec(ref, workspace=workspace, work_root=root)
        async with open_connection(server.command, spec, startup_timeout_s=float(server.startup_timeout)) as conn:
            return dict(conn.tools)
    finally:
        import shutil

        shutil.rmtree(workspace, ignore_errors=True)


def compare(server_file: McpServerFile, listed: Mapping[str, Definition]) -> list[Comparison]:
    found = []
    for upstream, entry in server_file.mcp_server.tools.items():
        now = listed.get(upstream)
        if now is None:
            offered = ", ".join(sorted(listed)) or "none"
            why = f"the server offers no tool {upstream!r} (it offers: {offered})"
            found.append(Comparison(upstream, "missing", None, why))
        elif entry.pinned is None:
            found.append(Comparison(upstream, "new", now, f"not pinned yet; the server offers {now.digest[:19]}"))
        elif entry.pinned.digest == now.digest:
            found.append(Comparison(upstream, "unchanged", now, f"matches its pin {now.digest[:19]}"))
        else:
            what = []
            if entry.pinned.description != now.description:
                what.append("description")
            if dict(entry.pinned.parameters) != dict(now.parameters):
                what.append("input schema")
            found.append(
                Comparison(
                    upstream, "changed", now,
                    f"changed since pinned ({' and '.join(what) or 'definition'}): "
                    f"pinned {entry.pinned.digest[:19]}, offered {now.digest[:19]}",
                )
            )
    return found


def _child(node: yaml.Node, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                return key_node, value_node
    return None


def _last_line(node: yaml.Node) -> int:
    """0-based line of the last character of `node`'s own content (comments after it excluded)."""
    if isinstance(node, yaml.ScalarNode):
        end = node.end_mark
        return end.line if end.column > 0 else end.line - 1
    if isinstance(node, yaml.MappingNode) and node.value:
        return max(max(_last_line(k), _last_line(v)) for k, v in node.value)
    if isinstance(node, yaml.SequenceNode) and node.value:
        return max(_last_line(item) for item in node.value)
    return node.end_mark.line


def _block(data: Mapping[str, object], indent: int) -> str:
    text = yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False, allow_unicode=True, width=100)
    return "".join(" " * indent + line + "\n" if line else "\n" for line in text.splitlines())


def pinned_data(listed: Definition) -> dict[str, object]:
    return {"digest": listed.digest, "description": listed.description, "parameters": dict(listed.parameters)}


def write_pins(text: str, pins: Mapping[str, Definition]) -> str:
    """`text` with the ``pinned:`` block of each tool in `pins` set to its listed definition."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    server = _child(root, "mcp_server") if root is not None else None
    tools = _child(server[1], "tools") if server else None
    if tools is None:
        raise ValueError("the file has no mcp_server.tools mapping")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    flat = "".join(lines)
    edits: list[tuple[int, int, str]] = []
    for upstream, listed in pins.items():
        found = _child(tools[1], upstream)
        if found is None:
            raise ValueError(f"mcp_server.tools has no entry {upstream!r}")
        key_node, value_node = found
        block = {"pinned": pinned_data(listed)}
        if not isinstance(value_node, yaml.MappingNode) or value_node.flow_style or not value_node.value:
            # Flow style (or empty): rewrite this tool's entry as a block mapping.
            current = yaml.safe_load(flat[value_node.start_mark.index : value_node.end_mark.index]) or {}
            current = {k: v for k, v in dict(current).items() if k != "pinned"}
            indent = key_node.start_mark.column + 2
            edits.append((key_node.end_mark.index, offsets[_last_line(value_node) + 1],
                          ":\n" + _block({**current, **block}, indent)))
            continue
        indent = value_node.value[0][0].start_mark.column
        existing = _child(value_node, "pinned")
        if existing is not None:
            start = offsets[existing[0].start_mark.line]
            end = offsets[_last_line(existing[1]) + 1]
        else:
            start = end = offsets[_last_line(value_node) + 1]
        edits.append((start, end, _block(block, indent)))
    for start, end, replacement in sorted(edits, reverse=True):
        flat = flat[:start] + replacement + flat[end:]
    return flat


def save(path: Path, text: str) -> None:
    """Replace `path` atomically, keeping its mode."""
    mode = path.stat().st_mode & 0o7777
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with __import__("contextlib").suppress(OSError):
            os.unlink(temporary)
        raise
