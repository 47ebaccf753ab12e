"""The audit key: where it lives, how it is created and loaded, and the keys derived from it.

The key (32 random bytes) signs the checkpoints and keys the digest of every action's
arguments. Whoever can read it can forge checkpoints, and whoever can write the audit
database must not be able to read it — so by default it lives *beside* the state
directory, not in it: ``<state-dir>-keys/audit-key`` (the directory 0700, the key 0400),
e.g. ``/var/lib/sconnect-keys/audit-key`` for ``/var/lib/sconnect``. A tool that reaches
the state directory (a symlinked workspace, a file host rooted too high) or a backup of
it does not carry the key. ``SCONNECT_AUDIT_KEY_FILE`` (or ``key_file=``) puts it
anywhere else, e.g. ``/etc/sconnect/audit-key``.

Earlier versions kept the key at ``<state-dir>/audit-key``. The writer moves such a key
to the new default place at its next start (and says so); readers (verify) still find
it there until then.

Derived keys: each use gets its own key, ``HMAC-SHA256(key, "sconnect " + purpose)``, so
that a value computed for one purpose is never valid for another. Purposes:
``checkpoint`` is not derived (the checkpoints use the key itself, as before);
``arguments`` keys :func:`engine.canonical.keyed_digest` of action arguments.

Errors: :class:`AuditKeyError` for a key that is missing (where checkpoints need it),
malformed, or readable by group or others.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat
from hashlib import sha256
from pathlib import Path
from typing import Final

from ._errors import AuditKeyError

__all__ = [
    "KEY_BYTES",
    "KEY_DIR_SUFFIX",
    "KEY_ENV",
    "KEY_NAME",
    "default_key_path",
    "derive",
    "key_path",
    "legacy_key_path",
    "load_or_create_key",
    "read_key",
]

log = logging.getLogger(__name__)

KEY_NAME: Final = "audit-key"
KEY_ENV: Final = "SCONNECT_AUDIT_KEY_FILE"
KEY_BYTES: Final = 32
KEY_DIR_SUFFIX: Final = "-keys"


def default_key_path(state_dir: str | os.PathLike[str]) -> Path:
    """``<state-dir>-keys/audit-key``: a sibling of the state directory."""
    state = Path(os.path.abspath(state_dir))
    return state.parent / f"{state.name}{KEY_DIR_SUFFIX}" / KEY_NAME


def legacy_key_path(state_dir: str | os.PathLike[str]) -> Path:
    """Where earlier versions kept the key: inside the state directory."""
    return Path(state_dir) / KEY_NAME


def key_path(state_dir: str | os.PathLike[str], key_file: str | os.PathLike[str] | None = None) -> Path:
    """Where the key lives: ``key_file``, else ``$SCONNECT_AUDIT_KEY_FILE``, else
    :func:`default_key_path` — or, for a reader, the legacy place when only it holds a
    key (the writer moves it at its next start)."""
    if key_file is not None:
        return Path(key_file)
    env = os.environ.get(KEY_ENV, "").strip()
    if env:
        return Path(env)
    default = default_key_path(state_dir)
    legacy = legacy_key_path(state_dir)
    if not default.exists() and legacy.exists():
        return legacy
    return default


def is_configured(key_file: str | os.PathLike[str] | None) -> bool:
    """Whether the operator chose the key's place (then nothing is moved or created
    beside the state directory)."""
    return key_file is not None or bool(os.environ.get(KEY_ENV, "").strip())


def read_key(path: Path) -> bytes:
    """The key's bytes. Raises :class:`AuditKeyError` (missing, unreadable, wrong size)."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        raise AuditKeyError(f"audit key {path} is missing") from None
    except OSError as exc:
        raise AuditKeyError(f"audit key {path}: {exc.strerror}") from None
    if len(key) != KEY_BYTES:
        raise AuditKeyError(f"audit key {path} must hold exactly {KEY_BYTES} bytes, not {len(key)}")
    return key


def _move_legacy(legacy: Path, target: Path) -> None:
    """Move a key from the state directory to its own directory (same bytes, 0400)."""
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = read_key(legacy)
    _create(target, data)
    legacy.unlink()
    log.warning("audit: moved the audit key out of the state directory, from %s to %s; whoever could "
                "read the state directory until now could have copied it (see README, Audit log)",
                legacy, target)


def _create(path: Path, data: bytes) -> None:
    # O_EXCL: two starting processes never each write their own; the loser uses the winner's.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o400)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def load_or_create_key(state_dir: Path, key_file: str | os.PathLike[str] | None, *, may_create: bool) -> tuple[
        Path, bytes]:
    """The writer's key and its path: read it, or create it (32 random bytes, 0400, in a
    0700 directory) when ``may_create``; a legacy key in the state directory is moved
    to the default place first.

    Refuses a key that others may read or write (whoever can read it can forge
    checkpoints), and refuses to create one when checkpoints already exist
    (``may_create`` False): a new key would silently orphan every old checkpoint.
    """
    configured = is_configured(key_file)
    path = key_path(state_dir, key_file) if configured else default_key_path(state_dir)
    legacy = legacy_key_path(state_dir)
    try:
        if not configured and not path.exists() and legacy.exists():
            try:
                _move_legacy(legacy, path)
            except OSError as exc:
                # An upgrade whose service cannot create the new directory yet (systemd's
                # ProtectSystem=strict without the new StateDirectory): keep running on the
                # old key rather than not at all, and say what to change.
                log.error("audit: cannot move the audit key out of the state directory to %s (%s); still using "
                          "%s, where whoever reads the state directory can read it. Create %s (under systemd: "
                          "StateDirectory=... %s) and restart", path, exc.strerror, legacy, path.parent,
                          path.parent.name)
                path = legacy
        if not path.exists():
            if not may_create:
                raise AuditKeyError(
                    f"audit key {path} is missing but the audit log has checkpoints signed with it; "
                    f"restore the key (or set {KEY_ENV} to its path) — a new key would orphan them"
                )
            if not configured:
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _create(path, secrets.token_bytes(KEY_BYTES))
        mode = path.stat().st_mode
    except OSError as exc:
        raise AuditKeyError(
            f"cannot create the audit key {path}: {exc.strerror}; create its directory (0700, owned by the "
            f"service's user; under systemd: StateDirectory=... {path.parent.name}) or set {KEY_ENV}"
        ) from None
    if stat.S_IMODE(mode) & 0o077:
        raise AuditKeyError(
            f"audit key {path} is accessible to other users (mode {stat.S_IMODE(mode):04o}); "
            f"chmod 400 it — whoever can read it can forge checkpoints"
        )
    if not configured and legacy.exists():
        log.warning("audit: an old audit key is still in the state directory (%s); the key in use is %s. "
                    "Remove the old one: whoever reads the state directory can read it", legacy, path)
    return path, read_key(path)


def derive(key: bytes, purpose: str) -> bytes:
    """The key for one ``purpose`` (module docstring)."""
    return hmac.new(key, f"sconnect {purpose}".encode(), sha256).digest()
