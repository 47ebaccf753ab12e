"""Argument parsing and dispatch for ``sconnect``; each command group lives in its own module.

Exit codes: 0 success, 1 the thing checked is not fine (invalid config, a
denied policy question, a broken audit chain), 2 the command itself was wrong
(usage, a missing file).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..errors import ScalyticsError
from . import audit, chat, check, mcp, policy, protocol, serve, token, tools


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sconnect",
        description="Scalytics Connect: agents call tools and read resources for people, safely.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check.register(commands)
    tools.register(commands)
    serve.register(commands)
    token.register(commands)
    protocol.register(commands)
    chat.register(commands)
    audit.register(commands)
    policy.register(commands)
    mcp.register(commands)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("scalytics-connect")
    except PackageNotFoundError:
        return "(not installed)"


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="DIR",
        help="configuration directory holding agents.d/, tools.d/, resources.d/, policies/ "
        "(default: the current directory if it is one, else the shipped example)",
    )


def add_state_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        default=os.environ.get("SCONNECT_STATE_DIR", ".sconnect"),
        help="state directory: database, audit log, secrets, workspace (default ./.sconnect)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except ScalyticsError as exc:
        print(f"sconnect: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`sconnect tools list | head`): not an error of ours.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0
