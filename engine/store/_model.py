"""What the state store holds, independent of the database: records, errors, checks.

Errors::

    StoreError
    ├── UnknownSessionError (also LookupError)
    ├── DuplicateError
    ├── StoreClosedError
    ├── SchemaVersionError        the database is newer than this program
    └── StoreUnavailableError     PostgreSQL down, unreachable, login refused, went away
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from ..audit import REDACTED, redact
from ..errors import ScalyticsError

#: The SQLite schema version (PRAGMA user_version); PostgreSQL's store migrations count alike.
SCHEMA_VERSION: Final = 4
ACTION_STATUSES: Final = ("pending", "approved", "denied", "expired", "cancelled")
DECISIONS: Final = frozenset({"approved", "denied", "cancelled"})
ROLES: Final = frozenset({"system", "user", "assistant", "tool"})
MESSAGE_KEYS: Final = frozenset({"role", "content", "tool_calls", "tool_call_id", "name"})



class StoreError(ScalyticsError):
    """Root of the store's errors."""


class UnknownSessionError(StoreError, LookupError):
    """No session with this id."""


class DuplicateError(StoreError):
    """A session or action with this id already exists."""


class StoreClosedError(StoreError):
    """The store was closed."""


class SchemaVersionError(StoreError):
    """The database was written by a newer version of Scalytics Connect."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached or used right now (PostgreSQL down, login refused)."""


@attrs.frozen(kw_only=True)
class SessionRecord:
    session_id: str
    subject: str
    agent: str
    state: str  # lifecycle name, lower case (engine.protocol.LifecycleState values)
    created_at: float
    updated_at: float


@attrs.frozen(kw_only=True)
class PendingAction:
    """A durable approval request. ``arguments`` has the tool's secret arguments as
    ``"[redacted]"``; ``arguments_digest`` is the keyed digest of the exact arguments
    (:meth:`Store.matches`): what is approved is exactly what runs."""

    action_id: str
    session_id: str | None  # None for a direct tool_call outside any session
    turn_id: str | None
    subject: str
    kind: str  # "tool" | "resource"
    name: str
    arguments: dict[str, Any] = attrs.field(hash=False)
    arguments_digest: str
    level: int
    approver: str  # "user" | "admin"
    created_at: float
    expires_at: float
    status: str  # one of ACTION_STATUSES
    decided_by: str | None
    decided_at: float | None
    reason: str | None


def session_row(row: tuple[Any, ...]) -> SessionRecord:
    return SessionRecord(session_id=row[0], subject=row[1], agent=row[2], state=row[3],
                         created_at=row[4], updated_at=row[5])


SESSION_COLS = "session_id, subject, agent, state, created_at, updated_at"
CONSOLE_COLS = "token_hash, subject, roles, claims, csrf, created_at, expires_at"


@attrs.frozen(kw_only=True)
class ConsoleSessionRecord:
    """A browser console sign-in. Only the SHA-256 of its cookie is kept: a copy of the
    database cannot be replayed as a cookie. ``claims`` are the token's verified claims."""

    token_hash: str
    subject: str
    roles: frozenset[str]
    claims: dict[str, Any] = attrs.field(hash=False)
    csrf: str  # the double-submit token the page sends back (useless without the cookie)
    created_at: float
    expires_at: float  # never later than the token the session was opened with


def console_row(row: tuple[Any, ...]) -> ConsoleSessionRecord:
    return ConsoleSessionRecord(token_hash=row[0], subject=row[1], roles=frozenset(json.loads(row[2])),
                                claims=json.loads(row[3]), csrf=row[4], created_at=row[5], expires_at=row[6])
ACTION_COLS = (
    "action_id, session_id, turn_id, subject, kind, name, arguments, arguments_digest, "
    "level, approver, created_at, expires_at, status, decided_by, decided_at, reason"
)


def action_row(row: tuple[Any, ...]) -> PendingAction:
    return PendingAction(
        action_id=row[0], session_id=row[1], turn_id=row[2], subject=row[3], kind=row[4],
        name=row[5], arguments=json.loads(row[6]), arguments_digest=row[7], level=row[8],
        approver=row[9], created_at=row[10], expires_at=row[11], status=row[12],
        decided_by=row[13], decided_at=row[14], reason=row[15],
    )


def redact_tool_calls(message: Mapping[str, Any], secret: Mapping[str, Iterable[str]]) -> dict[str, Any]:
    """A copy of a chat-completions message whose tool calls have the secret arguments
    of their tool (``secret``: tool name -> argument names) as ``"[redacted]"``.

    Arguments may be an object or, as chat-completions sends them, a JSON string; a
    string that does not parse as an object, for a tool that has secrets, is replaced
    whole (it cannot be redacted field by field, and it may hold the secret)."""
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        return dict(message)
    redacted_calls = []
    for call in calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        name = function.get("name") if isinstance(function, Mapping) else None
        hidden = frozenset(secret.get(name, ())) if isinstance(name, str) else frozenset()
        if not hidden or not isinstance(function, Mapping):
            redacted_calls.append(call)
            continue
        arguments = function.get("arguments")
        if isinstance(arguments, Mapping):
            cleaned: Any = redact(arguments, hidden)
        else:
            try:
                parsed = json.loads(arguments) if isinstance(arguments, str) else None
            except ValueError:
                parsed = None
            cleaned = (json.dumps(redact(parsed, hidden), ensure_ascii=False) if isinstance(parsed, dict)
                       else REDACTED)
        redacted_calls.append({**call, "function": {**function, "arguments": cleaned}})
    return {**message, "tool_calls": redacted_calls}


def check_message(message: Mapping[str, Any]) -> None:
    if not isinstance(message, Mapping):
        raise ValueError("a message is a mapping (chat-completions style)")
    if message.get("role") not in ROLES:
        raise ValueError(f"message role must be one of {sorted(ROLES)}")
    extra = set(message) - MESSAGE_KEYS
    if extra:
        raise ValueError(
            f"unexpected message keys {sorted(extra)}; allowed: {sorted(MESSAGE_KEYS)}"
        )


