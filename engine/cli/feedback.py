"""``sconnect feedback report``: what users said of the answers, per agent, model and tool.

Reads the state database the server uses (``SCONNECT_DATABASE_URL``, else
``database_url`` in the settings file, else SQLite in ``--state-dir``) and prints, for
each agent, each model that answered its turns and each tool its rated turns called:
how many answers were rated, how many good and bad, the share rated good, and (models)
how many turns the model answered.  ``--json`` prints the rows as JSON.

Exit codes: 0 printed (also when nothing is rated yet), 2 no state database, or one
that cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    from .args import add_config_option, add_state_option

    parser = commands.add_parser("feedback", help="what users said of the answers (ratings)")
    sub = parser.add_subparsers(dest="feedback_command", required=True, metavar="SUBCOMMAND")
    reporting = sub.add_parser("report", help="ratings per agent, model and tool: counts and the share rated good")
    add_config_option(reporting)
    add_state_option(reporting)
    reporting.add_argument("--server-config", metavar="FILE",
                           help="settings file naming database_url (default: <config>/sconnect.yaml if present)")
    reporting.add_argument("--agent", help="only this agent")
    reporting.add_argument("--json", action="store_true", help="the rows as JSON")
    reporting.set_defaults(run=run_report)


def run_report(args: argparse.Namespace) -> int:
    import trio

    from ..memory.report import report
    from ..server.settings import DATABASE_NAME
    from ..store import open_store
    from .db import _database_url
    from .output import print_json

    url = _database_url(args)
    path = Path(args.state_dir) / DATABASE_NAME
    if url is None and not path.is_file():
        print(f"sconnect: no state database at {path} (and no database_url): nothing was rated here",
              file=sys.stderr)
        return 2

    async def read() -> list[Any]:
        async with await open_store(path, url) as store:
            return report(await store.ratings(limit=None), await store.turns_by_model(), args.agent)

    lines = trio.run(read)
    if args.json:
        print_json([line.to_dict() for line in lines])
        return 0
    if not lines:
        print("no turns are rated yet" + (f" for agent {args.agent}" if args.agent else ""))
        return 0
    print(f"{'by':<6} {'agent':<16} {'name':<20} {'rated':>6} {'good':>5} {'bad':>5} {'good %':>7} {'turns':>6}")
    for line in lines:
        rate = f"{line.good_rate * 100:.0f}%" if line.good_rate is not None else "-"
        turns = str(line.turns) if line.turns is not None else ""
        print(f"{line.by:<6} {_cut(line.agent, 16):<16} {_cut(line.name, 20):<20} {line.rated:>6} {line.good:>5} "
              f"{line.bad:>5} {rate:>7} {turns:>6}")
    return 0


def _cut(text: str, width: int) -> str:
    from ..printable import printable

    text = printable(text)
    return text if len(text) <= width else text[: width - 1] + "…"
