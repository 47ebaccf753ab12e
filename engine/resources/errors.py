"""Why a resource read was refused, as a typed error carrying its protocol error code."""

from __future__ import annotations

from ..errors import ScalyticsError


class ResourceError(ScalyticsError):
    """A read refused or failed; ``code`` is the protocol's error code for it."""

    code = "invalid_arguments"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadURI(ResourceError):
    """The URI is malformed or tries to leave its host (``..``, encoded separators, ...)."""

    code = "invalid_arguments"


class NotFound(ResourceError):
    """Unknown scheme or host, no template matches, or no such file or row."""

    code = "not_found"


class Refused(ResourceError):
    """The target exists but may not be served (outside the allowed globs, a symlink out, off the allowlist)."""

    code = "forbidden"


class TooLarge(ResourceError):
    """The content exceeds the host's size limit and the host refuses oversize content."""

    code = "too_large"


class UpstreamTimeout(ResourceError):
    code = "timeout"


class Unavailable(ResourceError):
    """The upstream failed (connection error, bad status) or the database cannot be opened."""

    code = "unavailable"
