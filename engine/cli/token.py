"""``sconnect token issue``: mint a token the server (same state directory and environment) accepts.

Keys as the server finds them (``engine.auth.load_settings``): the ``SCONNECT_JWT_*``
environment; or, for a development server, the ``jwt-secret`` that ``serve --dev``
created in the state directory — used when ``--dev`` is given, or when the environment
names no key at all (so that the README's ``sconnect token issue`` works after
``sconnect serve --dev`` unchanged). It never creates a secret.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..config.units import parse_duration
from ..errors import UsageError


def register(commands: Any) -> None:
    from .args import add_config_option, add_state_option

    parser = commands.add_parser("token", help="mint tokens")
    sub = parser.add_subparsers(dest="token_command", required=True, metavar="SUBCOMMAND")
    issuing = sub.add_parser("issue", help="print a signed JWT")
    add_state_option(issuing)
    add_config_option(issuing)
    issuing.add_argument("--sub", required=True, help="the subject (who the token speaks for)")
    issuing.add_argument("--role", action="append", default=[], help="a role; repeat for several")
    issuing.add_argument("--ttl", default="1h", help="lifetime with its unit, e.g. 30m, 1h (default 1h)")
    issuing.add_argument("--dev", action="store_true",
                         help="sign with the secret `serve --dev` created in the state directory (the default "
                              "when no SCONNECT_JWT_* key is set)")
    issuing.set_defaults(run=run_issue)


def run_issue(args: argparse.Namespace) -> int:
    try:
        ttl = parse_duration(args.ttl)
    except ValueError as exc:
        raise UsageError(f"--ttl: {exc}") from None
    from ..auth import issue, key_configured, load_settings
    from ..config import load_config, resolve_config_dir

    dev = args.dev or not key_configured(os.environ)
    settings = load_settings(os.environ, Path(args.state_dir), dev=dev, create=False)
    declared = load_config(resolve_config_dir(args.config)).roles
    for role in args.role:
        if role not in declared:
            print(f"warning: no policy declares the role {role!r} (declared: {', '.join(sorted(declared))}); "
                  "the token grants nothing through it", file=sys.stderr)
    if not args.role:
        print("warning: the token has no role: under the default policy it may call nothing", file=sys.stderr)
    try:
        token = issue(settings, args.sub, args.role, float(ttl))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(token)
    return 0
