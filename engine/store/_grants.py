"""Grants in the state store: the record, its columns, and the operations' SQL.

A grant is a remembered approval (engine/grants): what it covers (subject, the session
for a session grant, tool or resource, the approved arguments' keyed digest or the
argument constraints a person confirmed), what it rests on (the tool's level, the rule
that required the approval and that rule's fingerprint), who made it, until when, and
how it ended. The operations are plain functions over ``_tx.Tx``, run by
:class:`~engine.store.Store` in a worker thread, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import json
from typing import Any, Final

import attrs

from ._tx import Tx

GRANT_STATUSES: Final = ("live", "revoked", "ended")
GRANT_COLS: Final = (
    "grant_id, subject, session_id, scope, kind, name, arguments, arguments_digest, constraints, "
    "level, approver, rule_id, rule_digest, action_id, made_by, created_at, expires_at, status, "
    "ended_at, ended_by, end_reason"
)

# Appended to the SQLite migrations (engine/store/_sqlite.py) and, as is, to PostgreSQL's (which
# splits statements at every ';': none in the comments).
GRANTS_DDL: Final = """
CREATE TABLE grants (
    grant_id         TEXT PRIMARY KEY,
    subject          TEXT NOT NULL,   -- whose actions it covers
    -- the session a session grant covers, NULL for a grant by duration
    session_id       TEXT REFERENCES sessions (session_id) ON DELETE CASCADE,
    scope            TEXT NOT NULL CHECK (scope IN ('session', 'duration')),
    kind             TEXT NOT NULL CHECK (kind IN ('tool', 'resource')),
    name             TEXT NOT NULL,   -- tool name or resource URI
    arguments        TEXT NOT NULL,   -- canonical JSON of the approved arguments, secrets redacted
    arguments_digest TEXT NOT NULL,   -- keyed digest of the exact approved arguments
    constraints      TEXT,            -- JSON list of argument constraints, NULL: exact arguments only
    level            INTEGER NOT NULL CHECK (level BETWEEN 0 AND 3),
    approver         TEXT NOT NULL CHECK (approver IN ('user', 'admin')),
    rule_id          TEXT NOT NULL,   -- the rule that required the approval
    rule_digest      TEXT NOT NULL,   -- what that rule said (engine.policy.rule_fingerprint)
    action_id        TEXT NOT NULL,   -- the approval it remembers
    made_by          TEXT NOT NULL,   -- who approved
    created_at       DOUBLE PRECISION NOT NULL,
    expires_at       DOUBLE PRECISION NOT NULL,
    status           TEXT NOT NULL DEFAULT 'live' CHECK (status IN ('live', 'revoked', 'ended')),
    ended_at         DOUBLE PRECISION,
    ended_by         TEXT,            -- who revoked it, NULL when a reload ended it
    end_reason       TEXT
);
CREATE INDEX grants_by_target ON grants (subject, kind, name, status, expires_at);
CREATE INDEX grants_by_status ON grants (status, expires_at)
"""


@attrs.frozen(kw_only=True)
class GrantRecord:
    """One stored grant. ``constraints`` is None for "exactly these arguments"; else a
    tuple of ``{"argument", "kind", ...}`` dicts (engine/grants/_match.py)."""

    grant_id: str
    subject: str
    session_id: str | None
    scope: str  # "session" | "duration"
    kind: str  # "tool" | "resource"
    name: str
    arguments: dict[str, Any] = attrs.field(hash=False)
    arguments_digest: str
    constraints: tuple[dict[str, Any], ...] | None = attrs.field(hash=False)
    level: int
    approver: str
    rule_id: str
    rule_digest: str
    action_id: str
    made_by: str
    created_at: float
    expires_at: float
    status: str  # one of GRANT_STATUSES (an expired grant stays "live" past expires_at)
    ended_at: float | None = None
    ended_by: str | None = None
    end_reason: str | None = None

    def live_at(self, now: float) -> bool:
        return self.status == "live" and self.expires_at > now

    def row(self) -> tuple[Any, ...]:
        constraints = None if self.constraints is None else json.dumps(list(self.constraints), sort_keys=True)
        return (self.grant_id, self.subject, self.session_id, self.scope, self.kind, self.name,
                json.dumps(self.arguments, sort_keys=True, ensure_ascii=False), self.arguments_digest,
                constraints, self.level, self.approver, self.rule_id, self.rule_digest, self.action_id,
                self.made_by, self.created_at, self.expires_at, self.status, self.ended_at, self.ended_by,
                self.end_reason)


def grant_row(row: tuple[Any, ...]) -> GrantRecord:
    return GrantRecord(
        grant_id=row[0], subject=row[1], session_id=row[2], scope=row[3], kind=row[4], name=row[5],
        arguments=json.loads(row[6]), arguments_digest=row[7],
        constraints=None if row[8] is None else tuple(json.loads(row[8])), level=row[9], approver=row[10],
        rule_id=row[11], rule_digest=row[12], action_id=row[13], made_by=row[14], created_at=row[15],
        expires_at=row[16], status=row[17], ended_at=row[18], ended_by=row[19], end_reason=row[20],
    )


def insert(tx: Tx, record: GrantRecord) -> None:
    tx.execute(f"INSERT INTO grants ({GRANT_COLS}) VALUES ({', '.join('?' * 21)})", record.row())


def live_for(tx: Tx, subject: str, kind: str, name: str, now: float) -> tuple[GrantRecord, ...]:
    rows = tx.execute(
        f"SELECT {GRANT_COLS} FROM grants WHERE subject = ? AND kind = ? AND name = ? AND status = 'live' "
        "AND expires_at > ? ORDER BY created_at, grant_id", (subject, kind, name, now)).fetchall()
    return tuple(map(grant_row, rows))


def select(tx: Tx, *, subject: str | None, session_id: str | None, live_after: float | None,
           limit: int) -> tuple[GrantRecord, ...]:
    """Grants newest first; ``subject`` matches the covered subject or the maker."""
    clauses: list[str] = []
    params: list[Any] = []
    if subject is not None:
        clauses.append("(subject = ? OR made_by = ?)")
        params += [subject, subject]
    if session_id is not None:
        clauses.append("session_id = ?")
        params.append(session_id)
    if live_after is not None:
        clauses.append("status = 'live' AND expires_at > ?")
        params.append(live_after)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = tx.execute(f"SELECT {GRANT_COLS} FROM grants {where} ORDER BY created_at DESC, grant_id LIMIT ?",
                      (*params, limit)).fetchall()
    return tuple(map(grant_row, rows))


def get(tx: Tx, grant_id: str) -> GrantRecord | None:
    row = tx.execute(f"SELECT {GRANT_COLS} FROM grants WHERE grant_id = ?", (grant_id,)).fetchone()
    return None if row is None else grant_row(row)


def end(tx: Tx, grant_id: str, status: str, by: str | None, reason: str, now: float) -> bool:
    """Live -> ``status`` (revoked/ended), atomically: of two enders exactly one gets True."""
    with tx.transaction():
        done = tx.execute(
            "UPDATE grants SET status = ?, ended_at = ?, ended_by = ?, end_reason = ? "
            "WHERE grant_id = ? AND status = 'live'", (status, now, by, reason, grant_id)).rowcount
    return bool(done == 1)
