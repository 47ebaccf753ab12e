"""Argument parsing and dispatch for ``sconnect``; each command group lives in its own module.

Exit codes: 0 success, 1 the thing checked is not fine (invalid config, a
denied policy question, a broken audit chain), 2 the command itself was wrong
(usage, a missing file).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from ..errors import ScalyticsError
from .args import add_config_option as add_config_option
from .args import add_state_option as add_state_option

# Each command's module, imported only when that command runs: `sconnect --version` and
# `sconnect check` must not pay for the server, the chat or the sandbox. The one-line help
# here is what `sconnect --help` lists without importing anything.
COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("check", "validate the configuration and summarise it"),
    "tools": ("tools", "list and try tools"),
    "serve": ("serve", "run the server"),
    "token": ("token", "mint tokens"),
    "protocol": ("protocol", "the wire protocol"),
    "chat": ("chat", "talk to an agent from the terminal"),
    "audit": ("audit", "verify and read the audit log"),
    "policy": ("policy", "explain, test, lint and compare the policies"),
    "mcp": ("mcp", "MCP: the stdio bridge to a running server; pin an MCP server tool file"),
    "db": ("db", "the state database: schema migrations (sconnect db migrate --dry-run)"),
    "grants": ("grants", "list and revoke remembered approvals (grants) on a running server"),
    "feedback": ("feedback", "what users said of the answers: ratings per agent, model and tool"),
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser, with the full options of the command named in ``argv`` (every
    command's when ``argv`` is None) and one help line for each of the others."""
    parser = argparse.ArgumentParser(
        prog="sconnect",
        description="Scalytics Connect: agents call tools and read resources for people, safely.",
    )
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = _command_in(argv)
    for name, (module, summary) in COMMANDS.items():
        if argv is None or name == chosen:
            importlib.import_module(f"{__package__}.{module}").register(commands)
        else:
            commands.add_parser(name, help=summary)
    return parser


def _command_in(argv: Sequence[str] | None) -> str | None:
    # Top-level options take no value, so the first word that is not an option names the command.
    return next((word for word in argv or () if not word.startswith("-")), None)


class _VersionAction(argparse.Action):
    """``--version``, reading the installed metadata only when asked (it costs ~80 ms)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("scalytics-connect")
        except PackageNotFoundError:
            found = "(not installed)"
        print(f"{parser.prog} {found}")
        parser.exit()


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
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
