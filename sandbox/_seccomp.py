"""The seccomp filter every sandboxed tool runs under, compiled once by libseccomp.

The program is built on the engine's side with `pyseccomp` (ctypes over the system's
libseccomp, Debian `libseccomp2`) and exported as raw BPF: bubblewrap loads it with
`--seccomp FD` just before it execs the tool; the process backend's runner loads the
same bytes with seccomp(2) after no_new_privs and Landlock. Nothing here assembles BPF
by hand, and the runner (stdlib only) never needs libseccomp.

Default: allow. Denied, because a tool has no business with them and each is a known
road into the kernel or out of the sandbox (Flatpak's and Docker's lists, trimmed):

- io_uring (its own syscall surface, invisible to this filter), bpf, perf_event_open,
  userfaultfd, keyctl/add_key/request_key: EPERM;
- new namespaces: unshare, setns, clone with any CLONE_NEW* flag: EPERM; clone3 (its
  flags live in memory the filter cannot read): ENOSYS, so libc falls back to clone;
- the mount family (mount, umount2, pivot_root, move_mount, open_tree, fsopen, fsmount,
  fsconfig, fspick, mount_setattr), chroot: EPERM;
- ptrace, process_vm_readv/writev, kcmp: EPERM;
- kexec_load/kexec_file_load, init/finit/delete_module, open_by_handle_at: EPERM;
- personality other than the default PER_LINUX (0): EPERM (no ASLR opt-out);
- ioctl TIOCSTI / TIOCLINUX (compared on the low 32 bits): EPERM (no typing into a
  terminal);
- set-uid/set-gid bits: chmod/fchmod/fchmodat/fchmodat2 and open/openat/creat/mknod/
  mknodat with S_ISUID or S_ISGID in the mode: EPERM, so a tool cannot plant a set-id
  program in a host-visible directory; openat2 (mode in memory): ENOSYS.

Only the native architecture is in the filter: a syscall made through another ABI
(int 0x80, x32) kills the thread (libseccomp's bad-architecture action).

Error handling: `compiled()` raises `SeccompUnavailable` when pyseccomp or libseccomp
is missing or refuses the filter; `problem()` says why in one line, or None.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from typing import Any

_EPERM = ("io_uring_setup", "io_uring_enter", "io_uring_register", "bpf", "perf_event_open",
          "userfaultfd", "keyctl", "add_key", "request_key", "unshare", "setns", "mount",
          "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsmount",
          "fsconfig", "fspick", "mount_setattr", "chroot", "ptrace", "process_vm_readv",
          "process_vm_writev", "kcmp", "kexec_load", "kexec_file_load", "init_module",
          "finit_module", "delete_module", "open_by_handle_at")  # fmt: skip
_ENOSYS = ("clone3", "openat2")
_CLONE_NEW = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
_TIOCSTI = 0x5412
_TIOCLINUX = 0x541C
# syscall -> index of its mode argument
_MODE_ARG = {"chmod": 1, "fchmod": 1, "fchmodat": 2, "fchmodat2": 2, "open": 2, "openat": 3,
             "creat": 1, "mknod": 1, "mknodat": 2}  # fmt: skip


class SeccompUnavailable(OSError):
    """The filter cannot be built here (pyseccomp or libseccomp missing or refusing)."""


def _build() -> bytes:
    try:
        import pyseccomp as sc  # type: ignore[import-untyped]
    except (ImportError, OSError, RuntimeError) as exc:
        # pyseccomp raises at import when libseccomp.so.2 is not installed.
        raise SeccompUnavailable(f"pyseccomp/libseccomp not usable: {exc}") from None
    try:
        filt: Any = sc.SyscallFilter(sc.ALLOW)
        for name in _EPERM:
            _rule(sc, filt, sc.ERRNO(errno.EPERM), name)
        for name in _ENOSYS:
            _rule(sc, filt, sc.ERRNO(errno.ENOSYS), name)
        for flag in _CLONE_NEW.values():
            # x86_64 and aarch64 both pass clone's flags as the first argument.
            filt.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
        filt.add_rule(sc.ERRNO(errno.EPERM), "personality", sc.Arg(0, sc.NE, 0))
        for request in (_TIOCSTI, _TIOCLINUX):
            filt.add_rule(
                sc.ERRNO(errno.EPERM), "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, request)
            )
        for name, index in _MODE_ARG.items():
            for bit in (stat.S_ISUID, stat.S_ISGID):
                _rule(sc, filt, sc.ERRNO(errno.EPERM), name, sc.Arg(index, sc.MASKED_EQ, bit, bit))
    except OSError as exc:
        raise SeccompUnavailable(f"libseccomp refused the filter: {exc}") from None
    return export(filt, "seccomp-bpf")


def export(filt: Any, label: str) -> bytes:
    """The BPF program libseccomp compiles from ``filt`` (through a memfd: its export
    writes to a file descriptor). SeccompUnavailable when it fails or looks wrong."""
    try:
        fd = os.memfd_create(label, os.MFD_CLOEXEC)
        try:
            with open(fd, "w+b", closefd=False) as handle:
                filt.export_bpf(handle)
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
        finally:
            os.close(fd)
    except OSError as exc:
        raise SeccompUnavailable(f"libseccomp could not export the {label} filter: {exc}") from None
    program = b"".join(chunks)
    if not program or len(program) % 8:
        raise SeccompUnavailable(f"libseccomp exported a malformed program ({len(program)} bytes)")
    return program


def _rule(sc: Any, filt: Any, action: int, name: str, *args: Any) -> None:
    if int(sc.resolve_syscall(sc.system_arch(), name)) < 0:
        return  # a syscall this architecture (or this libseccomp) does not know
    filt.add_rule(action, name, *args)


@functools.cache
def _cached() -> bytes | str:
    try:
        return _build()
    except SeccompUnavailable as exc:
        return str(exc)


def compiled() -> bytes:
    """The BPF program (struct sock_filter array); built once per process."""
    value = _cached()
    if isinstance(value, str):
        raise SeccompUnavailable(value)
    return value


def problem() -> str | None:
    """Why the filter cannot be built here, or None when it can."""
    value = _cached()
    return value if isinstance(value, str) else None
