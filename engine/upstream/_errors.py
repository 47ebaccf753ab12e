"""Exceptions of the MCP upstream runtime.

::

    ScalyticsError
    └── UpstreamError                 an MCP server used as a tool failed us
        └── StartFailed               it did not start, initialise and list its tools
                                      within startup_timeout (or exited meanwhile)

What goes wrong during a call (a crash, garbage on stdout, a hang, an error result, a
tool whose definition no longer matches its pin) is not an exception: the call ends
with a `sandbox.Result` whose status and message say so, like any other tool.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ..errors import ScalyticsError


class UpstreamError(ScalyticsError):
    """Root of the errors of engine.upstream; ``stderr`` holds the server's stderr tail."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


class StartFailed(UpstreamError):
    """The server did not become ready (started, initialised, tools listed) in time."""


@contextlib.contextmanager
def single_errors() -> Iterator[None]:
    """Re-raise an exception group holding exactly one exception as that exception, so
    that `except StartFailed` works across the nurseries a connection is made of. A group
    of several stays a group."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for item in group.exceptions:
        if isinstance(item, BaseExceptionGroup):
            yield from _leaves(item)
        else:
            yield item
