"""Console sign-in state: one-time codes and cookie sessions, held in memory.

A token is verified once, at sign-in, and exchanged for a session: a random id
(the cookie's value) mapped to the verified :class:`~engine.auth.Principal` and an
expiry, never the JWT itself, so a cookie that leaks says nothing about the token
and dies with the server. Each session also holds its CSRF token (double-submit:
the page sends it back in a header that another site cannot set).

``serve --dev`` mints one-time codes: a code is good for one sign-in, then gone.

Both tables are bounded: past :data:`MAX_SESSIONS` the oldest session is dropped,
so a flood of sign-ins cannot grow memory without limit.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict

import attrs

from ..auth import Principal

MAX_SESSIONS = 10_000
MAX_CODES = 1_000
# A console session ends after this long even if its token lives longer.
SESSION_TTL_S = 12 * 3600.0
CODE_TTL_S = 12 * 3600.0


@attrs.frozen
class ConsoleSession:
    principal: Principal
    expires_at: float
    csrf: str


@attrs.define(eq=False)
class SignIns:
    """The console's sessions and one-time codes (wall-clock epochs, like token expiries)."""

    session_ttl_s: float = SESSION_TTL_S
    _sessions: OrderedDict[str, ConsoleSession] = attrs.field(factory=OrderedDict)
    _codes: OrderedDict[str, tuple[Principal, float]] = attrs.field(factory=OrderedDict)

    def open(self, principal: Principal) -> tuple[str, ConsoleSession]:
        """A new session for ``principal``: its id (the cookie) and its record."""
        session_id = secrets.token_urlsafe(32)
        expires = min(principal.expires_at, time.time() + self.session_ttl_s)
        session = ConsoleSession(principal=principal, expires_at=expires, csrf=secrets.token_urlsafe(32))
        self._sessions[session_id] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session_id, session

    def get(self, session_id: str | None) -> ConsoleSession | None:
        """The live session of that cookie value, or None (unknown or expired: then forgotten)."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires_at <= time.time():
            del self._sessions[session_id]
            return None
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)

    def issue_code(self, principal: Principal, ttl_s: float = CODE_TTL_S) -> str:
        """A one-time sign-in code for ``principal`` (``serve --dev`` prints it in a link)."""
        code = secrets.token_urlsafe(24)
        self._codes[code] = (principal, min(principal.expires_at, time.time() + ttl_s))
        while len(self._codes) > MAX_CODES:
            self._codes.popitem(last=False)
        return code

    def redeem(self, code: str) -> Principal | None:
        """The principal of a code not used before and not expired; the code is spent either way."""
        for known in list(self._codes):
            # Constant-time comparison: a code is a bearer secret.
            if hmac.compare_digest(known.encode(), code.encode()):
                principal, expires = self._codes.pop(known)
                return principal if expires > time.time() else None
        return None
