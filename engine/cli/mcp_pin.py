"""``sconnect mcp pin FILE``: review an MCP server's tools and pin their definitions.

The server of an ``mcp_server`` tool file is started once, in the file's own sandbox;
its tools are listed and, for each tool the file allows, the description and input
schema the server offers are written into the file under ``pinned:`` (with their
digest). The rest of the file is left as it was. At every start the engine compares the
server's tools with these pins and refuses a tool that changed.

``--check`` compares without writing: exit 0 when every allowed tool matches its pin,
1 otherwise (a tool changed, not pinned yet, or no longer offered), 2 when the file or
the server cannot be used. The coordinator wires ``register_pin`` under ``sconnect mcp``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import UsageError


def register_pin(commands: Any) -> None:
    """Add the ``pin`` command to ``commands`` (an argparse sub-parsers object)."""
    parser = commands.add_parser("pin", help="start an MCP server tool file's server and pin its tools' definitions")
    parser.add_argument("file", metavar="FILE", help="the tools.d file declaring mcp_server")
    parser.add_argument(
        "--check", action="store_true", help="compare with the pins, write nothing (exit 1 on a difference)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import trio

    from ..config.converter import converter, structure_errors
    from ..config.model import McpServerFile, Source
    from ..config.schemas import validate
    from ..config.yamldoc import read_document
    from ..upstream import StartFailed
    from ..upstream.pin import compare, list_definitions, save, write_pins

    path = Path(args.file)
    display = args.file
    doc = read_document(path, display)
    if isinstance(doc, list):
        raise UsageError("\n".join(map(str, doc)))
    problems = validate("tool", doc) if isinstance(doc.data, dict) else []
    if not isinstance(doc.data, dict) or "mcp_server" not in doc.data:
        raise UsageError(f"{display}: not an mcp_server tool file")
    if problems:
        raise UsageError("\n".join(map(str, problems)))
    try:
        server_file = converter.structure(doc.data, McpServerFile)
    except Exception as exc:  # cattrs error groups: every leaf is reported
        raise UsageError(
            "\n".join(str(doc.problem(field, message)) for field, message in structure_errors(exc))
        ) from None
    server_file = McpServerFile(
        server_file.name, server_file.description, server_file.mcp_server, server_file.sandbox, Source(display, 1)
    )
    try:
        listed = trio.run(list_definitions, server_file)
    except StartFailed as exc:
        tail = exc.stderr.strip().splitlines()[-5:]
        raise UsageError(f"{display}: {exc}" + "".join(f"\n  stderr: {line}" for line in tail)) from None
    results = compare(server_file, listed)
    hidden = sorted(set(listed) - set(server_file.mcp_server.tools))
    for result in results:
        line, column = doc.locate(["mcp_server", "tools", result.upstream], key=True)
        print(f"{display}:{line}:{column}: {result.upstream}: {result.message}")
    if hidden:
        print(f"{display}: not exposed (not in mcp_server.tools): {', '.join(hidden)}")
    missing = [r for r in results if r.status == "missing"]
    if args.check:
        return 0 if all(r.status == "unchanged" for r in results) else 1
    if missing:
        print(f"{display}: nothing written: allow only tools the server offers", file=sys.stderr)
        return 1
    pins = {r.upstream: r.listed for r in results if r.listed is not None and r.status != "unchanged"}
    if not pins:
        print(f"{display}: every pin is up to date")
        return 0
    text = path.read_text(encoding="utf-8")
    save(path, write_pins(text, pins))
    print(f"{display}: pinned {len(pins)} tool{'s' if len(pins) != 1 else ''}: {', '.join(sorted(pins))}")
    return 0
