"""``sconnect audit ...``: verify the audit log's chain and checkpoints, read it, set it aside.

``verify`` exits 0 when the log is intact, 1 when it was tampered with (naming the first
bad record and why), 2 when there is no audit log (or the command was wrong), 3 when the
key cannot be read (nothing is known to be wrong, but the checkpoints were not checked).
``tail`` and ``query`` print a compact table — every field a client could choose shown
with its control characters escaped (``engine.printable``), so that a subject or a
target cannot forge lines — or one JSON object per line with ``--json``. ``archive``
moves a log the server refused to continue aside, so that the next start begins anew.

With ``SCONNECT_DATABASE_URL`` (or ``--database-url``) naming PostgreSQL, ``verify``,
``tail`` and ``query`` read the shared log every instance writes, from any host holding
the audit key; ``--state-dir`` then only says where this host's head file is (its
``-keys`` directory). ``archive`` is SQLite-only and says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..printable import printable
from .output import print_json

#: ``audit verify``'s exit codes beyond 0 (intact) and 2 (no log, or a usage error).
TAMPERED = 1
KEY_UNUSABLE = 3


def register(commands: Any) -> None:
    from .args import add_state_option

    parser = commands.add_parser("audit", help="verify and read the audit log")
    sub = parser.add_subparsers(dest="audit_command", required=True, metavar="SUBCOMMAND")

    checking = sub.add_parser("verify", help="check the hash chain and the signed checkpoints (exit 1 if tampered)")
    add_state_option(checking)
    checking.add_argument("--key-file", metavar="PATH",
                          help="the checkpoint key (default $SCONNECT_AUDIT_KEY_FILE, else STATE-keys/audit-key)")
    checking.add_argument("--json", action="store_true", help="print the whole report as JSON")
    _add_database_option(checking)
    checking.set_defaults(run=run_verify)

    aside = sub.add_parser("archive", help="set a refused audit log aside (kept whole) so that the next start "
                           "begins a new one")
    add_state_option(aside)
    aside.set_defaults(run=run_archive)

    last = sub.add_parser("tail", help="the most recent records")
    add_state_option(last)
    last.add_argument("-n", type=_count, default=20, metavar="N", help="how many (default 20)")
    last.add_argument("--json", action="store_true", help="one JSON object per line")
    _add_database_option(last)
    last.set_defaults(run=run_tail)

    search = sub.add_parser("query", help="records matching filters (all must match)")
    add_state_option(search)
    search.add_argument("--subject", help="the subject (JWT sub)")
    search.add_argument("--tool", help="the target: a tool name or a resource URI")
    search.add_argument("--outcome", help="ok, error, denied, timeout, ...")
    search.add_argument("--kind", help="auth_failure, decision, approval, execution, resource_read, config_reload, "
                        "grant, feedback, memory, egress")
    search.add_argument("--since", metavar="TIME", help="ISO time (2025-01-31T12:00Z) or a duration back (10m, 2h, 7d)")
    search.add_argument("--until", metavar="TIME", help="like --since; exclusive")
    search.add_argument("--limit", type=_count, metavar="N", help="only the N most recent matches")
    search.add_argument("--json", action="store_true", help="one JSON object per line")
    _add_database_option(search)
    search.set_defaults(run=run_query)
    _add_database_option(aside)


def _add_database_option(parser: Any) -> None:
    parser.add_argument("--database-url", metavar="URL",
                        help="the shared PostgreSQL database (default $SCONNECT_DATABASE_URL; none: the SQLite log "
                        "in --state-dir)")


def _database_url(args: argparse.Namespace) -> str | None:
    import os

    from ..errors import UsageError
    from ..pg import is_postgres_url

    url = args.database_url or os.environ.get("SCONNECT_DATABASE_URL") or None
    if url is not None and not is_postgres_url(url):
        raise UsageError("the database URL must start with postgresql:// (or postgres://)")
    return url


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def run_verify(args: argparse.Namespace) -> int:
    from ..audit import verify, verify_shared

    url = _database_url(args)
    if url is not None:
        report = verify_shared(url, state_dir=args.state_dir, key_file=args.key_file)
    else:
        report = verify(args.state_dir, key_file=args.key_file)
    code = 0 if report.ok else KEY_UNUSABLE if report.key_unusable else TAMPERED
    if args.json:
        print_json(report.to_dict())
        return code
    for warning in report.warnings:
        print(f"warning: {printable(warning)}", file=sys.stderr)
    head = f"head {report.head_seq}/{report.head_hash[:16]}"
    if report.ok:
        print(f"OK: {report.records} records, {report.checkpoints} checkpoints, {head}")
        if report.last_checkpoint is not None:
            cp = report.last_checkpoint
            print(f"last checkpoint {cp.id} ({cp.reason}, {cp.time_iso}): seq {cp.seq}, mac {cp.mac}")
        return 0
    first = report.first_problem
    assert first is not None
    label = "CANNOT VERIFY" if code == KEY_UNUSABLE else "FAILED"
    print(f"{label}: {printable(str(first))}")
    for problem in report.problems[1:]:
        print(f"  also: {printable(str(problem))}")
    print(f"({report.records} records, {report.checkpoints} checkpoints, {head})")
    return code


def run_archive(args: argparse.Namespace) -> int:
    from ..audit import archive

    if _database_url(args) is not None:
        from ..errors import UsageError

        raise UsageError("audit archive is for the SQLite audit log only: the shared log in PostgreSQL is one chain "
                         "every instance continues; to start a new one, give the instances a new database (and "
                         "remove each host's <state>-keys/audit-head-pg-* file)")
    target = archive(args.state_dir)
    print(f"archived the audit log to {target}; the next start begins a new log")
    print(f"verify the archive with: sconnect audit verify --state-dir {target} --key-file KEY")
    return 0


def run_tail(args: argparse.Namespace) -> int:
    from ..audit import tail
    from ..audit._query import tail_rows

    url = _database_url(args)
    _print_records(_on_database(url, lambda execute: tail_rows(execute, args.n)) if url else
                   tail(args.state_dir, args.n), args.json)
    return 0


def run_query(args: argparse.Namespace) -> int:
    from ..audit import query
    from ..audit._query import query_rows
    from ..errors import UsageError

    filters = dict(subject=args.subject, tool=args.tool, outcome=args.outcome, since=args.since, until=args.until,
                   kind=args.kind, limit=args.limit)
    url = _database_url(args)
    try:
        records = _on_database(url, lambda execute: query_rows(execute, **filters)) if url else \
            query(args.state_dir, **filters)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _print_records(records, args.json)
    return 0


def _on_database(url: str, read: Any) -> list[Any]:
    """``read(execute)`` on the shared database (one connection, closed after)."""
    from ..audit import AuditError
    from ..pg import PgError, connect_once

    try:
        conn = connect_once(url, "sconnect-audit")
    except PgError as exc:
        raise AuditError(str(exc)) from None
    try:
        return read(lambda sql, params: conn.execute(sql.replace("?", "%s").encode(), params).fetchall())  # type: ignore[no-any-return]
    finally:
        conn.close()


def _print_records(records: list[Any], as_json: bool) -> None:
    if as_json:
        for record in records:
            sys.stdout.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
        return
    rows = [("SEQ", "TIME (UTC)", "KIND", "SUBJECT", "ACTION", "TARGET", "DECISION", "BY", "OUTCOME", "MS")]
    for r in records:
        decision = json.loads(r.decision)["effect"] or "-" if r.decision else "-"
        by = {"person": r.approver or "person", "rule": "rule"}.get(r.decided_by or "", "-")
        rows.append((str(r.seq), r.time_iso[:19].replace("T", " "), r.kind, printable(r.subject or "-"),
                     r.action or "-", _clip(printable(r.target or "-"), 40), decision, printable(by),
                     r.outcome or "-", "-" if r.duration_ms is None else f"{r.duration_ms:g}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
