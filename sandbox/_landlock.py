"""Landlock through its three syscalls (x86_64 / aarch64), stdlib only.

Imported on the host (to report the ABI) and inside the sandbox by the runner, so it
imports nothing but `ctypes` and `os` (never `ctypes.util`: it drags in subprocess and
threading, which slow every later fork).

`restrict()` confines the calling thread and its future children: reads only beneath
`read_paths` (+ `write_paths`), writes only beneath `write_paths` and to `write_files`,
no device ioctls (ABI >= 5, so TIOCSTI on a terminal opened later is refused), no TCP
bind/connect when `block_tcp` (ABI >= 4; UDP is not covered by Landlock), and no
signals or abstract-socket connections to processes outside the domain (ABI >= 6).
Each right is requested only when the running kernel knows it. Errors: OSError from the
syscalls; `restrict()` on a kernel without Landlock raises OSError(ENOSYS/EOPNOTSUPP).
"""

from __future__ import annotations

import ctypes
import errno
import os

_SYSCALLS = {
    "x86_64": (444, 445, 446),
    "aarch64": (444, 445, 446),  # generic syscall table, same numbers
}

_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1

FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

_READ = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
_WRITE_V1 = (
    FS_WRITE_FILE
    | FS_REMOVE_DIR
    | FS_REMOVE_FILE
    | FS_MAKE_CHAR
    | FS_MAKE_DIR
    | FS_MAKE_REG
    | FS_MAKE_SOCK
    | FS_MAKE_FIFO
    | FS_MAKE_BLOCK
    | FS_MAKE_SYM
)
_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _syscall(number: int, *args: object) -> int:
    result = int(_libc().syscall(number, *args))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def abi_version() -> int | None:
    """The kernel's Landlock ABI version, or None when Landlock is unusable here."""
    numbers = _SYSCALLS.get(os.uname().machine)
    if numbers is None:
        return None
    try:
        return _syscall(numbers[0], None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except OSError:
        return None


def _handled_fs(abi: int) -> int:
    rights = _READ | _WRITE_V1
    if abi >= 2:
        rights |= FS_REFER
    if abi >= 3:
        rights |= FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


def restrict(
    *,
    read_paths: tuple[str, ...],
    write_paths: tuple[str, ...],
    write_files: tuple[str, ...] = ("/dev/null",),
    block_tcp: bool,
) -> int:
    """Confine the calling process (see the module docstring); returns the ABI used.

    Missing paths are skipped. The caller must already have set no_new_privs (or hold
    CAP_SYS_ADMIN). Raises OSError when Landlock is unavailable or a syscall fails.
    """
    numbers = _SYSCALLS.get(os.uname().machine)
    abi = abi_version()
    if numbers is None or abi is None:
        raise OSError(errno.ENOSYS, "Landlock is not available")
    create, add_rule, restrict_self = numbers
    handled = _handled_fs(abi)
    attr = _RulesetAttr(handled_access_fs=handled, handled_access_net=0, scoped=0)
    size = 8
    if abi >= 4:
        size = 16
        if block_tcp:
            attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP
    if abi >= 6:
        size = 24
        attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
    ruleset = _syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    try:
        writable = _READ | (handled & ~_READ & ~FS_IOCTL_DEV)
        rules = [(path, _READ) for path in read_paths] + [(path, writable) for path in write_paths]
        rules += [(path, FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE) for path in write_files]
        for path, access in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if not os.path.isdir(path):
                    access &= _FILE_RIGHTS
                rule = _PathBeneathAttr(allowed_access=access & handled, parent_fd=fd)
                _syscall(
                    add_rule,
                    ctypes.c_int(ruleset),
                    ctypes.c_int(_RULE_PATH_BENEATH),
                    ctypes.byref(rule),
                    ctypes.c_uint32(0),
                )
            finally:
                os.close(fd)
        _syscall(restrict_self, ctypes.c_int(ruleset), ctypes.c_uint32(0))
    finally:
        os.close(ruleset)
    return abi
