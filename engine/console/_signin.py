"""Console sign-in state: cookie sessions in the state store, one-time codes in memory.

A token is verified once, at sign-in, and exchanged for a session: a random value
(the cookie) whose SHA-256 keys a row of the store (``console_sessions``) holding the
verified principal and an expiry, never the JWT itself. So a cookie that leaks says
nothing about the token, a copy of the database holds no usable cookie, and sessions
survive a restart and serve every instance sharing a PostgreSQL database (no sticky
balancing). Each session also holds its CSRF token (double-submit: the page sends it
back in a header that another site cannot set). Signing out revokes the row on every
instance; expired and revoked rows are swept at each sign-in and at start.

``serve --dev`` mints one-time codes, kept in this process only: a code is good for one
sign-in, then gone (the session it opens is stored like any other).

Both are bounded: a subject keeps at most :data:`MAX_SESSIONS_PER_SUBJECT` sign-ins (the
oldest go first), and at most :data:`MAX_CODES` codes wait.

Errors: the store's (:class:`~engine.store.StoreError`, ``StoreUnavailableError`` when
PostgreSQL is down) propagate; the console answers them as unavailable.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict

import attrs

from ..auth import Principal
from ..store import ConsoleSessionRecord, Store

MAX_SESSIONS_PER_SUBJECT = 50
MAX_CODES = 1_000
# A console session ends after this long even if its token lives longer.
SESSION_TTL_S = 12 * 3600.0
CODE_TTL_S = 12 * 3600.0
# token_urlsafe(32) is 43 characters; anything much longer is not one of ours.
_MAX_COOKIE_CHARS = 128


@attrs.frozen
class ConsoleSession:
    principal: Principal
    expires_at: float
    csrf: str


def cookie_hash(session_id: str) -> str:
    """What the store keeps of a cookie: its SHA-256 (the value is 256 random bits)."""
    return hashlib.sha256(session_id.encode()).hexdigest()


@attrs.define(eq=False)
class SignIns:
    """The console's sessions (in ``store``) and one-time codes (wall-clock epochs, like token expiries)."""

    store: Store
    session_ttl_s: float = SESSION_TTL_S
    _codes: OrderedDict[str, tuple[Principal, float]] = attrs.field(factory=OrderedDict)

    async def open(self, principal: Principal) -> tuple[str, ConsoleSession]:
        """A new session for ``principal``: its id (the cookie) and its record."""
        session_id = secrets.token_urlsafe(32)
        now = time.time()
        expires = min(principal.expires_at, now + self.session_ttl_s)
        session = ConsoleSession(principal=principal, expires_at=expires, csrf=secrets.token_urlsafe(32))
        await self.store.add_console_session(ConsoleSessionRecord(
            token_hash=cookie_hash(session_id), subject=principal.sub, roles=principal.roles,
            claims=dict(principal.claims), csrf=session.csrf, created_at=now, expires_at=expires,
        ), keep_per_subject=MAX_SESSIONS_PER_SUBJECT, now=now)
        return session_id, session

    async def get(self, session_id: str | None) -> ConsoleSession | None:
        """The live session of that cookie value, or None (unknown, expired or signed out)."""
        if not session_id or len(session_id) > _MAX_COOKIE_CHARS:
            return None
        record = await self.store.console_session(cookie_hash(session_id))
        if record is None:
            return None
        principal = Principal(sub=record.subject, roles=record.roles, expires_at=record.expires_at,
                              claims=record.claims)
        return ConsoleSession(principal=principal, expires_at=record.expires_at, csrf=record.csrf)

    async def close(self, session_id: str | None) -> None:
        """Sign out: the cookie is refused from now on, here and on every other instance."""
        if session_id and len(session_id) <= _MAX_COOKIE_CHARS:
            await self.store.revoke_console_session(cookie_hash(session_id))

    async def sweep(self) -> int:
        """Delete expired and signed-out sessions; how many."""
        return await self.store.sweep_console_sessions()

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
