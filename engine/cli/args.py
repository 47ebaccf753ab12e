"""Options several ``sconnect`` commands share (``--config``, ``--state-dir``), and how the
client commands (``chat``, ``grants``) take their token."""

from __future__ import annotations

import argparse
import os
import sys


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


def client_token(args: argparse.Namespace, command: str) -> str | None:
    """The token from ``--token`` (with a warning: the process list shows it), ``--token-file``
    or ``$SCONNECT_TOKEN``; None after a one-line message naming ``command``."""
    if args.token:
        print(f"sconnect {command}: warning: --token puts the token in the process list, readable by every "
              "local user; set SCONNECT_TOKEN or use --token-file FILE instead", file=sys.stderr)
        return str(args.token)
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as file:
                token = file.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            print(f"sconnect {command}: cannot read --token-file {args.token_file}: {exc}", file=sys.stderr)
            return None
        if not token or any(char.isspace() for char in token):
            print(f"sconnect {command}: --token-file {args.token_file} must hold one token", file=sys.stderr)
            return None
        return token
    token = os.environ.get("SCONNECT_TOKEN", "").strip()
    if not token:
        print(f"sconnect {command}: no token: set SCONNECT_TOKEN or pass --token-file FILE", file=sys.stderr)
        return None
    return token
