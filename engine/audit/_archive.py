"""``archive``: set an audit log aside so that the next start begins a new one.

The operator's step after a writer refused a log (``_adopt``): the log is kept, whole,
for investigation — ``audit.db`` with its ``-wal``/``-shm`` files, ``audit-checkpoints.log``
and the head file — in ``<state-dir>/audit-archive-<UTC time>/``, and the next start
writes a new log under the same key. Nothing is deleted and nothing is signed: an
archived log verifies (or fails) exactly as before, with
``sconnect audit verify --state-dir ARCHIVE --key-file KEY``.

Refuses (:class:`AuditLockedError`) while a writer holds the log, and
(:class:`AuditNotFoundError`) when there is nothing to archive.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import time
from pathlib import Path

from ._checkpoints import CHECKPOINT_LOG_NAME, HEAD_NAME, head_path
from ._db import AUDIT_DB_NAME
from ._errors import AuditLockedError, AuditNotFoundError

__all__ = ["archive"]


def archive(state_dir: str | os.PathLike[str]) -> Path:
    """Move the audit log of ``state_dir`` into a new archive directory; return it."""
    state = Path(state_dir)
    names = [AUDIT_DB_NAME, f"{AUDIT_DB_NAME}-wal", f"{AUDIT_DB_NAME}-shm", CHECKPOINT_LOG_NAME]
    present = [name for name in names if (state / name).exists()]
    head = head_path(state)
    if not present and not head.exists():
        raise AuditNotFoundError(f"no audit log to archive in {state}")
    lock_path = state / CHECKPOINT_LOG_NAME
    fd = os.open(lock_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600) if state.is_dir() else None
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise AuditLockedError(f"{state}: the server is writing this audit log; stop it first") from None
                raise
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = state / f"audit-archive-{stamp}"
        suffix = 1
        while target.exists():
            suffix += 1
            target = state / f"audit-archive-{stamp}-{suffix}"
        target.mkdir(mode=0o700)
        for name in names:
            if (state / name).exists():
                os.rename(state / name, target / name)
        if head.exists():
            shutil.move(head, target / HEAD_NAME)  # another directory, maybe another file system
        return target
    finally:
        if fd is not None:
            os.close(fd)
