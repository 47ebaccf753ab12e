"""The audit log's exceptions::

    ScalyticsError
    └── AuditError              anything the audit log refuses or cannot do
        ├── AuditClosedError    the writer is gone (stopped, never started and closed)
        ├── AuditWriteError     a commit failed; the records of that group were not written
        ├── AuditNotFoundError  there is no audit log in this state directory
        ├── AuditKeyError       the checkpoint key is missing, malformed or readable by others
        ├── AuditLockedError    another process is writing this audit log
        └── AuditAdoptionError  the log found holds records the key does not vouch for
"""

from __future__ import annotations

from ..errors import ScalyticsError


class AuditError(ScalyticsError):
    """Root of the audit log's errors."""


class AuditClosedError(AuditError):
    """``record()`` was called when no writer will ever commit it."""


class AuditWriteError(AuditError):
    """The database refused a commit (disk full, I/O error, a conflicting row).

    Nothing of the group is written (the transaction rolled back); the writer keeps
    running so that a transient failure does not take the service's audit down for good.
    """


class AuditNotFoundError(AuditError, LookupError):
    """No ``audit.db`` in the state directory."""


class AuditKeyError(AuditError):
    """The checkpoint key cannot be used."""


class AuditLockedError(AuditError):
    """Another process holds the writer's lock on this audit log."""


class AuditAdoptionError(AuditError):
    """The writer found records the key does not vouch for and will not continue them:
    the message names the problem, ``sconnect audit verify`` and ``sconnect audit archive``."""
