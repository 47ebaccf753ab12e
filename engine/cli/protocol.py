"""``sconnect protocol schema``: print the wire protocol's JSON Schema."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any) -> None:
    parser = commands.add_parser("protocol", help="the wire protocol")
    sub = parser.add_subparsers(dest="protocol_command", required=True, metavar="SUBCOMMAND")
    sub.add_parser("schema", help="print the protocol's JSON Schema").set_defaults(run=run_schema)


def run_schema(args: argparse.Namespace) -> int:
    from ..protocol import schema_text

    print(schema_text())
    return 0
