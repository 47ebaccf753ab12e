"""The policy revision: one hash naming exactly which policy files a decision was made under."""

from __future__ import annotations

import hashlib
import threading
import weakref
from pathlib import Path

from ..config.model import Config

_lock = threading.Lock()
# Keyed by the Config's identity (it holds mappings, so it is not hashable); a reload builds a new one.
_cache: dict[int, tuple[weakref.ref[Config], str]] = {}


def policy_revision(config: Config) -> str:
    """``sha256:<hex>`` over the loaded policy files' bytes, in file-name order.

    Each file contributes its relative path, a NUL, its length and its bytes, so
    that moving bytes between files changes the revision.  Computed once per
    :class:`Config` (the first call reads the files; a file edited between the
    load and that first call would be hashed as edited — the server asks for
    the revision right after each load).  A file that cannot be read any more
    is hashed as empty with its name marked, rather than failing a decision.
    """
    key = id(config)
    with _lock:
        cached = _cache.get(key)
        if cached is not None and cached[0]() is config:
            return cached[1]
    digest = hashlib.sha256()
    root = Path(config.root)
    for file in sorted({policy.source.file for policy in config.policies}):
        try:
            data = (root / file).read_bytes()
        except OSError:
            file, data = file + " (unreadable)", b""
        digest.update(file.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    revision = f"sha256:{digest.hexdigest()}"
    with _lock:
        _cache[key] = (weakref.ref(config, lambda _ref: _cache.pop(key, None)), revision)
    return revision
