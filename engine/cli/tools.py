"""``sconnect tools ...``: list the declared tools; ``run`` (tools_run) calls one through the server's action
path; ``new`` (tools_new) writes a new one."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import LEVEL_NAMES, load_config, resolve_config_dir
from ..config.tool_kinds import kind_of
from ..config.units import format_duration, format_size
from .output import print_json


def register(commands: Any) -> None:
    from .args import add_config_option, add_state_option

    parser = commands.add_parser("tools", help="list and try tools")
    sub = parser.add_subparsers(dest="tools_command", required=True, metavar="SUBCOMMAND")
    listing = sub.add_parser("list", help="print the declared tools")
    add_config_option(listing)
    listing.add_argument("--json", action="store_true", help="print the tools as JSON")
    listing.set_defaults(run=run_list)

    trying = sub.add_parser(
        "run", help="call one tool as a subject: decided, approved, sandboxed and audited as the server would"
    )
    trying.add_argument("name", help="the tool's name")
    trying.add_argument("--args", default="{}", metavar="JSON", help="the arguments as a JSON object (default {})")
    add_config_option(trying)
    add_state_option(trying)
    trying.add_argument("--json", action="store_true", help="print the result (status, output, reason) as JSON")
    trying.add_argument("--verbose", "-v", action="store_true", help="on failure, also print the tool's stderr")
    trying.add_argument("--sub", metavar="NAME", help="decide and audit as this subject (default operator:<login>)")
    trying.add_argument("--role", action="append", metavar="ROLE", help="a role of it (repeatable; default admin)")
    trying.add_argument("--yes", action="store_true", help="approve what this subject may approve, without asking")
    trying.set_defaults(run=_run_tool)

    from . import tools_new

    tools_new.register(sub)


def _network_json(network: object) -> object:
    if isinstance(network, tuple):
        return [
            {key: list(value) if isinstance(value, tuple) else value for key, value in entry.items()}
            if not isinstance(entry, str) else entry
            for entry in network
        ]  # fmt: skip
    return network


def _network_text(network: object) -> str:
    if isinstance(network, tuple):
        shown = [entry if isinstance(entry, str) else str(entry.get("host")) for entry in network]
        return "only " + ", ".join(shown) + " (through the egress proxy)"
    return "on" if network else "off"


def run_list(args: argparse.Namespace) -> int:
    config = load_config(resolve_config_dir(args.config))
    tools = sorted(config.tools.values(), key=lambda t: (t.permission_level, t.name))
    if args.json:
        print_json(
            [
                {
                    "name": tool.name,
                    "description": tool.description,
                    "level": tool.permission_level,
                    "parameters": dict(tool.parameters),
                    "runs": tool.runs,
                    "isolation": tool.sandbox.isolation,
                    "network": _network_json(tool.sandbox.network),
                    "workspace": tool.sandbox.workspace,
                    "source": str(tool.source),
                }
                for tool in tools
            ]
        )
        return 0
    for tool in tools:
        box = tool.sandbox
        print(f"{tool.name}  level {tool.permission_level} ({LEVEL_NAMES[tool.permission_level]})  [{tool.source}]")
        print(f"    {tool.description}")
        args_list = ", ".join(
            f"{name}{'' if name in tool.parameters.get('required', ()) else '?'}"
            for name in tool.parameters.get("properties", {})
        )
        print(f"    arguments: {args_list or 'none'}")
        kind = kind_of(tool)
        if kind.compose is not None:  # made of other tools' actions (a chain)
            print(f"    runs: {tool.runs} (each step an action of its own, in its own sandbox)")
            continue
        if kind.serve is not None:  # carried out by the engine itself (builtin)
            print(f"    runs: {tool.runs}, in the engine (no sandbox)")
            continue
        print(
            f"    runs: {tool.runs}; {box.isolation}, timeout {format_duration(box.timeout)}, "
            f"memory {format_size(box.memory)}, network {_network_text(box.network)}, workspace {box.workspace}"
        )
    return 0


def _run_tool(args: argparse.Namespace) -> int:
    from .tools_run import run

    return run(args)
