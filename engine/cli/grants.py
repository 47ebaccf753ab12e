"""``sconnect grants list`` and ``sconnect grants revoke``: remembered approvals, from a running server.

Both connect to the server's WebSocket (``--url``, the token from ``$SCONNECT_TOKEN``,
``--token-file`` or ``--token``) and ask with the protocol's ``grant_list`` /
``grant_revoke`` frames, so the server applies the same rules as for any client (a
person sees and revokes their own grants, an admin everyone's) and audits the revocation.

Exit codes: 0 done; 1 the server refused (``not_found``, ``forbidden``, ...); 2 the
command was wrong or the server could not be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from urllib.parse import urlsplit

from .args import client_token
from .output import print_json


def register(commands: Any) -> None:
    parser = commands.add_parser("grants", help="list and revoke remembered approvals (grants) on a running server")
    sub = parser.add_subparsers(dest="grants_command", required=True, metavar="SUBCOMMAND")
    listing = sub.add_parser("list", help="the grants you may see (an admin: everyone's), newest first")
    _connection_options(listing)
    listing.add_argument("--all", action="store_true", help="also revoked, ended and expired grants")
    listing.add_argument("--session", metavar="ID", help="only the grants of this session")
    listing.add_argument("--json", action="store_true", help="print the grants as JSON")
    listing.set_defaults(run=run_list)
    revoke = sub.add_parser("revoke", help="end a grant now (its subject, its maker or an admin)")
    revoke.add_argument("grant_id", metavar="GRANT_ID", help="the grant's id, as `grants list` shows it")
    _connection_options(revoke)
    revoke.add_argument("--reason", help="why (recorded in the audit log)")
    revoke.add_argument("--json", action="store_true", help="print the revoked grant as JSON")
    revoke.set_defaults(run=run_revoke)


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="the server's WebSocket URL, path included")
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--token", help="JWT; visible in the process list: prefer $SCONNECT_TOKEN or --token-file")
    token.add_argument("--token-file", metavar="FILE", help="read the JWT from FILE (default: $SCONNECT_TOKEN)")
    parser.add_argument("--cacert", metavar="FILE", help="trust this CA certificate (PEM) for wss://")


def _ask(args: argparse.Namespace, request: Any) -> int:
    """Connect, run ``request(client)``, and map failures to the exit codes."""
    if urlsplit(args.url).scheme not in ("ws", "wss"):
        print(f"sconnect grants: --url must be a ws:// or wss:// URL, not {args.url!r}", file=sys.stderr)
        return 2
    token = client_token(args, "grants")
    if token is None:
        return 2
    import trio

    from ..client import ClientError, ServerError, open_client

    async def main() -> int:
        try:
            with trio.fail_after(30):
                try:
                    async with open_client(args.url, token, cacert=args.cacert) as client:
                        await request(client)
                except BaseExceptionGroup as group:
                    # The server's refusal arrives through the client's nursery: say it bare.
                    raise _sole(group) from None
        except ServerError as exc:
            print(f"sconnect grants: {exc.code}: {exc.message}", file=sys.stderr)
            return 1
        except (ClientError, trio.TooSlowError) as exc:
            print(f"sconnect grants: {exc or 'no answer within 30s'}", file=sys.stderr)
            return 2
        return 0

    return trio.run(main)


async def full_grant_id(client: Any, given: str) -> str:
    """``given``, or the one live grant id the caller may see that starts with it (ids are
    long: people copy a prefix of what ``/grants`` showed). Unchanged when nothing or more
    than one matches: the server then answers ``not_found`` for it as written."""
    listing = await client.list_grants()
    ids = [grant.grant_id for grant in listing.grants]
    if given in ids:
        return given
    matches = [grant_id for grant_id in ids if grant_id.startswith(given.rstrip("."))] if len(given) >= 4 else []
    return matches[0] if len(matches) == 1 else given


def _sole(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception inside ``group`` (nested groups included), or the group itself."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        error = pending.pop()
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        else:
            leaves.append(error)
    return leaves[0] if len(leaves) == 1 else group


def run_list(args: argparse.Namespace) -> int:
    from ..printable import printable
    from ..protocol import to_wire

    async def request(client: Any) -> None:
        listing = await client.list_grants(args.session, all=args.all)
        if args.json:
            print_json(to_wire(listing)["payload"]["grants"])
            return
        if not listing.grants:
            print("no grants")
            return
        for grant in listing.grants:
            reach = "exactly these arguments" if grant.match is None else "matching " + ", ".join(
                f"{name}={kind}" for name, kind in sorted(grant.match.items()))
            where = f"session {grant.session_id}" if grant.session_id else "any session"
            ended = f" ({grant.end_reason})" if grant.end_reason else ""
            print(f"{grant.grant_id}  {grant.status}{ended}")
            arguments = printable(json.dumps(grant.arguments))
            print(f"  {printable(grant.subject)}: {printable(grant.name)} {arguments}, {reach}")
            print(f"  {grant.scope} ({where}), made by {printable(grant.made_by)} at {grant.created_at}, "
                  f"until {grant.expires_at}; level {grant.level}, rule {grant.rule_id}")

    return _ask(args, request)


def run_revoke(args: argparse.Namespace) -> int:
    from ..protocol import to_wire

    async def request(client: Any) -> None:
        revoked = await client.revoke_grant(await full_grant_id(client, args.grant_id), args.reason)
        if args.json:
            print_json(to_wire(revoked)["payload"]["grant"])
        else:
            print(f"revoked {revoked.grant.grant_id} ({revoked.grant.name} for {revoked.grant.subject})")

    return _ask(args, request)
