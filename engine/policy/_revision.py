"""The policy revision: one hash naming exactly which policy files a decision was made under."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from ..config.model import Config

# Far above any policy file the loader accepts.
_MAX_BYTES = 16 * 2**20


def revision_of(root: Path, files: Iterable[str]) -> str:
    """``sha256:<hex>`` over the policy files' bytes, in file-name order.

    Each file contributes its relative path, a NUL, its length and its bytes, so
    that moving bytes between files changes the revision.  The loader calls it
    while loading, right after the files are parsed, and keeps the result on the
    :class:`Config` (a file edited between its parse and this read would be
    hashed as edited; the next reload sees the edit anyway).  A file that cannot
    be read (gone, now a symlink, or absurdly large) is hashed as empty with its
    name marked.
    """
    digest = hashlib.sha256()
    for file in sorted(set(files)):
        try:
            data = _read_capped(root / file)
        except OSError:
            file, data = file + " (unreadable)", b""
        digest.update(file.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return f"sha256:{digest.hexdigest()}"


def _read_capped(path: Path) -> bytes:
    # Never a symlink (swapped in after the parse, it could point at /dev/zero), never unbounded.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(_MAX_BYTES + 1)
    if len(data) > _MAX_BYTES:
        raise OSError(f"{path}: larger than {_MAX_BYTES} bytes")
    return data


def policy_revision(config: Config) -> str:
    """The revision ``config`` was loaded with (computed once, by the loader)."""
    return config.policy_revision
