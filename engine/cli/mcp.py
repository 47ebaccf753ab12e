"""``sconnect mcp stdio``: the bridge a desktop MCP client launches (MCP on stdin/stdout, our protocol to a server);
``sconnect mcp pin``: review an MCP server used as a tool (engine/cli/mcp_pin.py).

stdout belongs to the MCP protocol: everything for people (errors, logs) goes to stderr.
Exit codes: 0 when the client closed stdin, 1 when the server could not be reached or
refused the token, 2 for a usage mistake (no token, a missing token file).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import UsageError


def register(commands: Any) -> None:
    parser = commands.add_parser("mcp", help="MCP: the stdio bridge to a running server; pin an MCP server tool file")
    sub = parser.add_subparsers(dest="mcp_command", required=True, metavar="SUBCOMMAND")
    stdio = sub.add_parser(
        "stdio", help="speak MCP on stdin/stdout, our protocol to a running server (for desktop MCP clients)",
        description="Every call goes to the server at --url, which decides, asks for approval, runs and audits it.",
    )
    stdio.add_argument("--url", required=True, help="the server's WebSocket URL, as `sconnect serve` prints it")
    stdio.add_argument("--token-file", metavar="FILE", help="read the JWT from this file (default: $SCONNECT_TOKEN)")
    stdio.add_argument("--approval-wait", default="50s", metavar="DURATION",
                       help="how long a call waiting for an approval is held before 'call again' (default 50s)")
    stdio.set_defaults(run=run_stdio)
    from .mcp_pin import register_pin

    register_pin(sub)


def _token(args: argparse.Namespace) -> str:
    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"--token-file {args.token_file}: {exc.strerror or exc}") from None
    else:
        token = os.environ.get("SCONNECT_TOKEN", "").strip()
    if not token:
        raise UsageError("no token: set SCONNECT_TOKEN or pass --token-file (sconnect token issue mints one)")
    return token


def run_stdio(args: argparse.Namespace) -> int:
    from ..config.units import parse_duration

    token = _token(args)
    try:
        budget_s = float(parse_duration(args.approval_wait))
    except ValueError as exc:
        raise UsageError(f"--approval-wait: {exc}") from None
    import logging
    from functools import partial

    import trio
    from trio_websocket import HandshakeError

    from ..client import CannotConnect, Refused
    from ..mcp._bridge import BridgeClosed, run_bridge

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="sconnect mcp: %(message)s")
    problems: list[str] = []
    try:
        trio.run(partial(run_bridge, args.url, token, budget_s=budget_s))
    except* Refused as group:
        problems.append(f"the server refused the connection ({group.exceptions[0]})")
    except* (CannotConnect, BridgeClosed) as group:
        problems.append(str(group.exceptions[0]))
    except* (HandshakeError, OSError) as group:
        problems.append(f"cannot reach {args.url}: {_reason(group.exceptions[0])}")
    if problems:
        print(f"sconnect mcp: {problems[0]}", file=sys.stderr)
        return 1
    return 0


def _reason(exc: BaseException) -> str:
    """The first cause that says something (a HandshakeError itself is often blank)."""
    seen: BaseException | None = exc
    while seen is not None:
        text = str(seen).strip()
        if text:
            return text
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__
