"""Per-call work directories, the sandbox user, and copies the sandbox user can reach.

When the engine runs as root, tools run as `SANDBOX_UID`/`SANDBOX_GID`: a uid of their
own (default 65533, set with ``SCONNECT_SANDBOX_UID`` / ``SCONNECT_SANDBOX_GID``), not
the host's shared `nobody` (65534) — a process of another service running as nobody
cannot read a running tool's /proc entries, and nothing the tools own is anybody
else's. Everything a tool must reach has to be reachable by that uid:

- the work root (default ``$TMPDIR/sconnect-sandbox-<uid>``, created 0711) and every
  directory above it must be traversable by "other" (x bit), else `SpecError`;
- each call gets a fresh ``call-*`` directory, 0700 and owned by the sandbox user, removed
  (fd-based, symlinks never followed) when the call ends, whatever the outcome;
- the runner scripts are copied once per process into ``.runner-<hash>/`` under the work
  root (0755/0644, root-owned) because the installed package may live under a 0700 home;
  a Python package the sandbox user cannot reach is copied the same way
  (`reachable_package`), keyed by the hash of its files.

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


def _id_from_env(name: str, default: int) -> int:
    text = os.environ.get(name, "")
    if not text:
        return default
    if not text.isdigit() or not 0 < int(text) < 2**32 - 1:
        raise ValueError(f"{name}={text!r} is not a uid/gid (a positive integer)")
    return int(text)


SANDBOX_UID = _id_from_env("SCONNECT_SANDBOX_UID", 65533)
SANDBOX_GID = _id_from_env("SCONNECT_SANDBOX_GID", SANDBOX_UID)

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
        try:
            info = os.stat(directory)
        except (FileNotFoundError, NotADirectoryError):
            return None  # the rest is still to be created (by us, traversable), or cannot be: not ours to say
        if not stat.S_ISDIR(info.st_mode):
            return None  # a file in the way: creating the directory will fail and say so
        if info.st_uid == SANDBOX_UID or info.st_mode & 0o001:
            continue
        return directory
    return None


@functools.cache
def runner_dir(work_root: str) -> str:
    """A directory holding copies of the runner scripts, readable by the sandbox user."""
    return staged_copy(work_root, _RUNNER_FILES, ".runner")


def staged_copy(work_root: str, names: tuple[str, ...], prefix: str, *, bytecode: bool = False) -> str:
    """Copies of this package's files ``names`` in ``work_root``, readable by the sandbox
    user (the package itself may sit where it cannot reach, e.g. under a 0700 home).

    The directory is named by the files' digest and made by an atomic rename, so that
    concurrent engines share one copy and a changed file gets a new one. With
    `bytecode`, each file's compiled form (for this interpreter's version) is staged
    beside it in ``__pycache__``: a sandboxed interpreter of the same version imports it
    instead of compiling the source (which it could not cache: the copy is read-only).
    """
    here = os.path.dirname(os.path.abspath(__file__))
    sources = {name: open(os.path.join(here, name), "rb").read() for name in names}
    digest = hashlib.sha256(b"".join(sources[name] for name in names)).hexdigest()
    target = os.path.join(work_root, f"{prefix}-{digest[:16]}")
    if os.path.isdir(target) and not os.path.islink(target):
        return target
    staging = tempfile.mkdtemp(dir=work_root, prefix=f"{prefix}-tmp-")
    for name, data in sources.items():
        with open(os.path.join(staging, name), "wb") as handle:
            handle.write(data)
        os.chmod(os.path.join(staging, name), 0o644)
    if bytecode:
        _compile(staging, names)
    os.chmod(staging, 0o755)
    try:
        os.rename(staging, target)
    except OSError:  # another process won the race; its copy is identical
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _compile(directory: str, names: tuple[str, ...]) -> None:
    import importlib.util
    import py_compile

    for name in names:
        source = os.path.join(directory, name)
        cached = importlib.util.cache_from_source(source)
        try:
            if os.environ.get("SOURCE_DATE_EPOCH"):  # reproducible builds: py_compile's hash-based form
                py_compile.compile(source, cfile=cached, doraise=True)
            else:
                _write_pyc(source, cached)
        except (py_compile.PyCompileError, SyntaxError, ValueError, OSError):
            continue  # the sandbox compiles the source itself, as without it
        os.chmod(cached, 0o644)
        os.chmod(os.path.dirname(cached), 0o755)


def _write_pyc(source: str, cached: str) -> None:
    """What ``py_compile.compile`` writes (a timestamp-based .pyc of this interpreter), from
    code compiled once per process: each new work root (each state directory) stages the
    same three files again. The code's file name need not be this copy's: the import
    system sets it to the path it loads the source from."""
    import importlib.util

    with open(source, "rb") as handle:
        data = handle.read()
    info = os.stat(source)
    header = b"".join((
        importlib.util.MAGIC_NUMBER,
        (0).to_bytes(4, "little"),  # flags: validated by the source's mtime and size
        (int(info.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little"),
        (info.st_size & 0xFFFFFFFF).to_bytes(4, "little"),
    ))
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    with open(cached, "wb") as handle:
        handle.write(header + _marshalled_code(data, os.path.basename(source)))


@functools.lru_cache(maxsize=16)
def _marshalled_code(data: bytes, name: str) -> bytes:
    import marshal

    return marshal.dumps(compile(data, name, "exec", dont_inherit=True))


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


def _tree_signature(path: str) -> tuple[tuple[str, int, int], ...]:
    """(relative path, size, mtime_ns) of every file of a package, __pycache__ skipped."""
    if not os.path.isdir(path):
        info = os.stat(path)
        return ((os.path.basename(path), info.st_size, info.st_mtime_ns),)
    found = []
    for top, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            full = os.path.join(top, name)
            info = os.stat(full)
            found.append((os.path.relpath(full, path), info.st_size, info.st_mtime_ns))
    return tuple(found)


@functools.cache
def _copy_package(path: str, work_root: str, signature: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256(repr((path, signature)).encode()).hexdigest()[:16]
    name = os.path.basename(os.path.normpath(path))
    target = os.path.join(work_root, f".pkg-{digest}", name)
    if os.path.exists(target):
        return target
    staging = tempfile.mkdtemp(dir=work_root, prefix=".pkg-tmp-")
    try:
        if os.path.isdir(path):
            shutil.copytree(
                path,
                os.path.join(staging, name),
                ignore=shutil.ignore_patterns("__pycache__"),
                symlinks=False,
            )
        else:
            shutil.copyfile(path, os.path.join(staging, name))
        for top, _dirs, files in os.walk(staging):
            os.chmod(top, 0o755)
            for entry in files:
                os.chmod(os.path.join(top, entry), 0o644)
        try:
            os.rename(staging, os.path.dirname(target))
        except OSError:  # another call won the race; its copy is identical
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def reachable_package(path: str, work_root: str) -> str:
    """`path`, or a copy under the work root when the sandbox user cannot reach it.

    A checkout under a 0700 home (root's /root, say) cannot be bound or imported by the
    sandbox user; its read-only copy is keyed by the files' names, sizes and mtimes, so
    an edited package gets a fresh copy on its next call.
    """
    if sandbox_user() is None or first_untraversable(os.path.join(path, "x")) is None:
        return path
    return _copy_package(path, work_root, _tree_signature(path))
