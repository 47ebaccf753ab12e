"""``sconnect tools ...``: list the declared tools, try one, write a new one (``tools_new``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import attrs

from ..config import LEVEL_NAMES, load_config, resolve_config_dir
from ..config.units import format_duration, format_size
from .output import print_json


def register(commands: Any) -> None:
    from .main import add_config_option, add_state_option

    parser = commands.add_parser("tools", help="list and try tools")
    sub = parser.add_subparsers(dest="tools_command", required=True, metavar="SUBCOMMAND")
    listing = sub.add_parser("list", help="print the declared tools")
    add_config_option(listing)
    listing.add_argument("--json", action="store_true", help="print the tools as JSON")
    listing.set_defaults(run=run_list)

    trying = sub.add_parser("run", help="run one tool through the sandbox, exactly as the server would")
    trying.add_argument("name", help="the tool's name")
    trying.add_argument("--args", default="{}", metavar="JSON", help="the arguments as a JSON object (default {})")
    add_config_option(trying)
    add_state_option(trying)
    trying.add_argument("--json", action="store_true", help="print the whole sandbox result as JSON")
    trying.add_argument("--verbose", "-v", action="store_true", help="on failure, also print the tool's stderr")
    trying.set_defaults(run=run_tool_once)

    from . import tools_new

    tools_new.register(sub)


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
                    "network": tool.sandbox.network,
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
        print(
            f"    runs: {tool.runs}; {box.isolation}, timeout {format_duration(box.timeout)}, "
            f"memory {format_size(box.memory)}, network {'on' if box.network else 'off'}, workspace {box.workspace}"
        )
    return 0


def run_tool_once(args: argparse.Namespace) -> int:
    """Exit 0 when the tool's status is ok, 1 otherwise, 2 when the request itself is wrong."""
    import trio

    import sandbox

    from ..server.actions import argument_errors
    from ..server.app import prepare_state_dir
    from ..toolrun import run_tool

    config = load_config(resolve_config_dir(args.config))
    tool = config.tools.get(args.name)
    if tool is None:
        print(f"sconnect: no tool named {args.name!r} (known: {', '.join(sorted(config.tools))})", file=sys.stderr)
        return 2
    try:
        arguments = json.loads(args.args)
    except ValueError as exc:
        print(f"sconnect: --args is not JSON: {exc} (expected an object such as '{{\"text\": \"hi\"}}')",
              file=sys.stderr)
        return 2
    if not isinstance(arguments, dict):
        print(f"sconnect: --args must be a JSON object, not {type(arguments).__name__}", file=sys.stderr)
        return 2
    problems = argument_errors(tool, arguments)
    if problems:
        print(f"sconnect: invalid arguments for {tool.name}:", *problems, sep="\n  ", file=sys.stderr)
        return 2
    state_dir = Path(args.state_dir).resolve()
    prepare_state_dir(state_dir)
    try:
        result = trio.run(
            lambda: run_tool(tool, arguments, workspace=state_dir / "workspace", work_root=state_dir / "work")
        )
    except sandbox.SandboxError as exc:
        print(f"sconnect: {tool.name}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print_json(attrs.asdict(result))
    else:
        print(f"{tool.name}: {result.status} ({result.message}) in {result.wall_time_s * 1000:.0f} ms, "
              f"backend {result.backend}", file=sys.stderr)
        if result.status == "ok":
            output = result.output
            print(output if isinstance(output, str) else json.dumps(output, indent=2, ensure_ascii=False))
        elif args.verbose and result.stderr_tail:
            print(result.stderr_tail, file=sys.stderr)
    return 0 if result.status == "ok" else 1
