"""Exceptions raised by the sandbox package.

Every error the package raises on purpose derives from one root::

    SandboxError(Exception)
    ├── SpecError(SandboxError, ValueError)      a Spec that cannot run as written
    │                                            (both or neither of argv / python, a cwd
    │                                            outside every visible path, a bad limit)
    ├── IsolationUnavailable(SandboxError)       the requested isolation cannot be provided
    │                                            here (e.g. "namespaces" without a usable
    │                                            bubblewrap); never downgraded in silence
    └── SpawnError(SandboxError, OSError)        the sandbox itself could not be started
                                                 (fork/exec of the launcher failed)

What the *tool* does wrong (non-zero exit, bad output, a limit hit, a timeout, a missing
binary inside the sandbox) is not an exception: it is a `Result` with a status.
`trio.Cancelled` passes through untouched after the sandbox has been killed and reaped.
"""

from __future__ import annotations


class SandboxError(Exception):
    """Root of every error raised by `sandbox`."""


class SpecError(SandboxError, ValueError):
    """The Spec is inconsistent or names something the sandbox cannot use."""


class IsolationUnavailable(SandboxError):
    """The isolation the Spec asks for is not available on this machine."""


class SpawnError(SandboxError, OSError):
    """Starting the sandbox launcher failed (resources exhausted, launcher missing)."""
