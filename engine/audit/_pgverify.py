"""``verify`` for the shared audit log in PostgreSQL, from any host holding the key.

The same checks as for SQLite (``_verify``: the chain record by record, the checkpoints'
MACs and chain, records against the checkpoints that pin them, this host's head file),
in one REPEATABLE READ snapshot, so that instances writing meanwhile never look like
tampering. Two differences, both from several writers sharing the chain (``_shared``):

- There is one copy of the checkpoints (the table; each instance also logs the ones it
  signs on ``engine.audit.checkpoint``, and keeps the last in its head file).
- Instead of "nothing after a shutdown checkpoint", the signed head row: records past it
  were *appended* by someone without the key; a head past the last record means the log
  was *truncated*; a record at the head's seq with another hash means it was *rewritten*.

The head file checked is this host's for that database, when ``state_dir`` is given and
it exists (``<state>-keys/audit-head-pg-...``).
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..pg import PgError, connect_once, describe
from ._checkpoints import CHECKPOINT_COLUMNS, Checkpoint, read_head
from ._errors import AuditError, AuditNotFoundError
from ._pgdb import read_head as read_shared_head
from ._pgdb import records_from
from ._record import GENESIS_HASH
from ._shared import head_file_for, sign_head
from ._verify import (
    MAX_PROBLEMS,
    Problem,
    VerifyReport,
    _check_against_records,
    _check_checkpoint_chain,
    _check_head,
    _key,
    _Walk,
)

if TYPE_CHECKING:
    import psycopg

__all__ = ["verify_shared"]


class _QMark:
    """``execute`` with ``?`` placeholders, as ``_verify``'s walk writes its few look-ups."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Any = ()) -> Any:
        return self.conn.execute(sql.replace("?", "%s").encode(), params)


def verify_shared(url: str, *, state_dir: str | os.PathLike[str] | None = None,
                  key_file: str | os.PathLike[str] | None = None) -> VerifyReport:
    """Check the whole shared audit log in the database at ``url`` (module docstring).
    Blocking. Raises :class:`AuditNotFoundError` when the database holds no audit log,
    :class:`AuditError` when it cannot be reached; everything wrong inside is reported."""
    import psycopg

    where = describe(url)
    problems: list[Problem] = []
    warnings: list[str] = []
    state = Path(state_dir) if state_dir is not None else Path(".")
    head_file = head_file_for(state, where) if state_dir is not None else None
    pinned_by_host: Checkpoint | None = None
    if head_file is not None:
        try:
            pinned_by_host = read_head(head_file)
        except ValueError as exc:
            problems.append(Problem(None, "checkpoint", str(exc)))
        except OSError as exc:
            problems.append(Problem(None, "key", f"cannot read the head file {head_file}: {exc.strerror}"))
    try:
        conn = connect_once(url, "sconnect-verify")
    except PgError as exc:
        raise AuditError(str(exc)) from None
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            exists = conn.execute("SELECT to_regclass('audit_head') IS NOT NULL").fetchone()
            if not exists or not exists[0]:
                raise AuditNotFoundError(f"no audit log in the database {where}")
            head = read_shared_head(conn)
            table: list[Checkpoint] = []
            rows = conn.execute(f"SELECT {', '.join(CHECKPOINT_COLUMNS)} FROM audit_checkpoints ORDER BY id")
            for row in rows.fetchall():
                try:
                    table.append(Checkpoint.from_mapping(dict(zip(CHECKPOINT_COLUMNS, row, strict=True))))
                except ValueError as exc:
                    problems.append(Problem(None, "checkpoint", f"checkpoint row {row[0]!r} is malformed: {exc}"))
            key = _key(state, key_file, table, problems)
            trusted = _check_checkpoint_chain(table, key, problems) if key is not None else []
            walk = _Walk(_QMark(conn), {c.seq for c in trusted} | ({head.seq} if head else set()), problems,
                         rows=records_from(conn, 1))
            walk.run()
    except psycopg.OperationalError as exc:
        raise AuditError(f"PostgreSQL {where}: {str(exc).strip()}") from None
    finally:
        conn.close()

    if pinned_by_host is not None:
        _check_head(pinned_by_host, key, table, problems)
    if key is not None:
        _check_against_records(trusted, walk, problems, warnings, shared=True)
        if head is not None:
            _check_signed_head(head.seq, head.hash, head.mac, key, walk, problems)
    if walk.count and not table:
        problems.append(Problem(None, "checkpoint", "the log has records but no checkpoint at all: they were "
                                "removed, or the records were not written by this service"))
    problems.sort(key=lambda p: (p.seq is None, p.seq or 0))
    if len(problems) > MAX_PROBLEMS:
        extra = len(problems) - MAX_PROBLEMS
        problems = [*problems[:MAX_PROBLEMS], Problem(None, "checkpoint", f"... and {extra} more problems")]
    return VerifyReport(
        records=walk.count, checkpoints=len(table), head_seq=walk.last_seq, head_hash=walk.last_hash,
        last_checkpoint=table[-1] if table else None, problems=tuple(problems), warnings=tuple(warnings),
    )


def _check_signed_head(seq: int, head_hash: str, mac: str | None, key: bytes, walk: _Walk,
                       problems: list[Problem]) -> None:
    if mac is None:
        if (seq, head_hash) != (0, GENESIS_HASH):
            problems.append(Problem(None, "checkpoint", f"the head row (seq {seq}) is not signed"))
        elif walk.count:
            problems.append(Problem(1, "appended", f"records 1..{walk.last_seq} exist but no writer ever "
                                    "signed a head: they were not written by this service"))
        return
    if not hmac.compare_digest(mac, sign_head(key, seq, head_hash)):
        problems.append(Problem(None, "checkpoint", f"the head row (seq {seq}) does not verify with the key: "
                                "it was altered"))
        return
    if walk.last_seq > seq:
        problems.append(Problem(seq + 1, "appended", f"records {seq + 1}..{walk.last_seq} lie past the signed "
                                f"head {seq}: added by someone without the key"))
    elif walk.last_seq < seq:
        problems.append(Problem(walk.last_seq + 1, "truncated", f"the signed head is record {seq} but the log "
                                f"ends at {walk.last_seq}: records were cut off"))
    elif seq and walk.hash_at.get(seq) != head_hash:
        problems.append(Problem(seq, "rewritten", f"record {seq} is not the one the signed head names: the "
                                "records were rewritten"))
