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

from ..errors import ScalyticsError


class UpstreamError(ScalyticsError):
    """Root of the errors of engine.upstream; ``stderr`` holds the server's stderr tail."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


class StartFailed(UpstreamError):
    """The server did not become ready (started, initialised, tools listed) in time."""
