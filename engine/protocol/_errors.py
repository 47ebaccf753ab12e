"""Error codes of the wire protocol and the exception that carries one.

Every ``error`` frame the server sends names one :class:`ErrorCode`; the set is closed so
that clients can switch on it. Code anywhere in the engine raises :class:`ProtocolError`
when a client's request must be refused; the server turns it into an ``error`` frame with
:func:`engine.protocol.error_frame` and carries on with the connection.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ..errors import ScalyticsError

__all__ = ["ErrorCode", "ProtocolError"]


class ErrorCode(enum.StrEnum):
    """The closed set of error codes of ``error`` frames (value = wire spelling).

    Frame-level (raised by :func:`engine.protocol.decode`):

    - ``bad_json``: the frame is not JSON text (syntax error, bytes that are not UTF-8,
      NaN/Infinity, duplicate keys, lone surrogate escapes).
    - ``invalid_message``: valid JSON that is not a valid frame: not an object, missing or
      wrongly typed envelope or payload field, an extra field, or a type only the server
      sends. ``details["path"]`` is the JSON path of the offending field.
    - ``unknown_type``: ``type`` is a string that names no message type.

    Request-level (raised by the engine while handling a valid frame):

    - ``not_found``: an id that does not exist: session, action, agent, tool, resource.
    - ``unauthorized``: no valid authentication (e.g. the token expired while connected).
    - ``forbidden``: authenticated, but acting on what is not yours: another subject's
      session, an approval you may not give, a tool or resource the policy denies you.
    - ``invalid_state``: the request is illegal in the current lifecycle state (a message
      to a paused agent, resuming an active one, anything to a terminated one).
    - ``invalid_arguments``: tool arguments that do not satisfy the tool's schema.
    - ``rate_limited``: too many requests or sessions; retry later.
    - ``too_large``: the frame or a field exceeds a size limit (also: more arrays and
      objects in one frame, or nested deeper, than the decoder accepts).
    - ``timeout``: the request took longer than allowed.
    - ``already_decided``: an approval for an action that was already approved, denied or
      cancelled (a double approval); nothing runs twice.
    - ``expired``: an approval for an action whose approval window has passed.
    - ``unavailable``: the server cannot serve this now (shutting down, config reload
      failed, a backend is down).
    - ``internal``: a bug or unexpected failure in the server; details are in its log,
      never in the frame.
    """

    BAD_JSON = "bad_json"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_TYPE = "unknown_type"
    NOT_FOUND = "not_found"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    INVALID_STATE = "invalid_state"
    INVALID_ARGUMENTS = "invalid_arguments"
    RATE_LIMITED = "rate_limited"
    TOO_LARGE = "too_large"
    TIMEOUT = "timeout"
    ALREADY_DECIDED = "already_decided"
    EXPIRED = "expired"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class ProtocolError(ScalyticsError):
    """A client request refused with an error code; becomes one ``error`` frame.

    ``message`` is shown to the client: it must never contain secrets, tokens or
    server internals. ``reply_to`` is the id of the frame being answered (None when that
    frame had no usable id); ``details`` is a JSON-serialisable mapping (read-only).
    """

    code: ErrorCode
    message: str
    reply_to: str | None
    details: Mapping[str, Any]

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        reply_to: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(code, message)
        self.code = ErrorCode(code)
        self.message = message
        self.reply_to = reply_to
        self.details = MappingProxyType(dict(details or {}))

    def replying_to(self, reply_to: str | None) -> ProtocolError:
        """The same error answering frame ``reply_to`` (for code that learns the id late)."""
        return ProtocolError(self.code, self.message, reply_to=reply_to, details=self.details)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"ProtocolError({self.code.value!r}, {self.message!r}, "
            f"reply_to={self.reply_to!r}, details={dict(self.details)!r})"
        )
