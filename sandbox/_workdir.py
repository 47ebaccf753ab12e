"""Per-call work directories, the sandbox user, and the runner's 65534-readable copy.

When the engine runs as root, tools run as `SANDBOX_UID`/`SANDBOX_GID` (nobody), so
everything a tool must reach has to be reachable by that uid:

- the work root (default ``$TMPDIR/sconnect-sandbox-<uid>``, created 0711) and every
  directory above it must be traversable by "other" (x bit), else `SpecError`;
- each call gets a fresh ``call-*`` directory, 0700 and owned by the sandbox user, removed
  (fd-based, symlinks never followed) when the call ends, whatever the outcome;
- the runner scripts are copied once per process into ``.runner-<hash>/`` under the work
  root (0755/0644, root-owned) because the installed package may live under a 0700 home.

`writable_paths` are never chowned here: the engine (or the operator) decides who owns a
shared workspace; it must be writable by `SANDBOX_UID` when the engine runs as root.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import stat
import tempfile

from ._errors import SpecError

SANDBOX_UID = 65534
SANDBOX_GID = 65534

_RUNNER_FILES = ("_runner.py", "_landlock.py")


def sandbox_user() -> tuple[int, int] | None:
    """(uid, gid) tools run as, or None when the engine is unprivileged (tools keep its uid)."""
    return (SANDBOX_UID, SANDBOX_GID) if os.geteuid() == 0 else None


def default_work_root() -> str:
    return os.path.join(tempfile.gettempdir(), f"sconnect-sandbox-{os.geteuid()}")


@functools.cache
def prepare_work_root(path: str) -> str:
    """Create (0711) or check the work root; cached per path. Raises SpecError."""
    path = os.path.abspath(path)
    try:
        os.makedirs(path, mode=0o711, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        raise SpecError(f"work_root {path!r}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        # A directory somebody else made in a shared /tmp must not host our calls.
        raise SpecError(f"work_root {path!r} is not a directory owned by uid {os.geteuid()}")
    if sandbox_user() is not None:
        if info.st_mode & 0o001 == 0:
            os.chmod(path, stat.S_IMODE(info.st_mode) | 0o011)
        unreachable = first_untraversable(path)
        if unreachable is not None:
            raise SpecError(
                f"work_root {path!r}: {unreachable!r} is not traversable by the sandbox "
                f"user (uid {SANDBOX_UID}); give it o+x or choose another work_root"
            )
    return path


def first_untraversable(path: str) -> str | None:
    """The first ancestor of `path` the sandbox user cannot traverse, if any."""
    current = os.path.dirname(os.path.abspath(path))
    ancestors = []
    while True:
        ancestors.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for directory in reversed(ancestors):
        info = os.stat(directory)
        if info.st_uid == SANDBOX_UID or info.st_mode & 0o001:
            continue
        return directory
    return None


@functools.cache
def runner_dir(work_root: str) -> str:
    """A directory holding copies of the runner scripts, readable by the sandbox user."""
    here = os.path.dirname(os.path.abspath(__file__))
    sources = {name: open(os.path.join(here, name), "rb").read() for name in _RUNNER_FILES}
    digest = hashlib.sha256(b"".join(sources[name] for name in _RUNNER_FILES)).hexdigest()
    target = os.path.join(work_root, f".runner-{digest[:16]}")
    if os.path.isdir(target) and not os.path.islink(target):
        return target
    staging = tempfile.mkdtemp(dir=work_root, prefix=".runner-tmp-")
    for name, data in sources.items():
        with open(os.path.join(staging, name), "wb") as handle:
            handle.write(data)
        os.chmod(os.path.join(staging, name), 0o644)
    os.chmod(staging, 0o755)
    try:
        os.rename(staging, target)
    except OSError:  # another process won the race; its copy is identical
        shutil.rmtree(staging, ignore_errors=True)
    return target


def make_call_dir(work_root: str) -> str:
    """A fresh, private work dir for one call, owned by the sandbox user."""
    path = tempfile.mkdtemp(dir=work_root, prefix="call-")
    user = sandbox_user()
    if user is not None:
        os.chown(path, *user)
    return path


def remove_call_dir(path: str) -> None:
    """Remove a call dir and everything the tool left in it (blocking; run in a thread)."""

    def retry_writable(function: object, failed: str, exc_info: object) -> None:
        # An unprivileged tool may chmod 000 its own subdirectories.
        try:
            os.chmod(os.path.dirname(failed), 0o700)
            os.chmod(failed, 0o700)
        except OSError:
            pass
        shutil.rmtree(failed, ignore_errors=True) if os.path.isdir(failed) else _unlink(failed)

    shutil.rmtree(path, onerror=retry_writable)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
