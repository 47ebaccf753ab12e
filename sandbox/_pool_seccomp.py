"""The pool worker's extra seccomp filter, stacked on the sandbox's own (`_seccomp`).

Calls of one pool share a pid and (without `network`) a network namespace, so each
worker adds, after taking its own process group:

- setsid and setpgid: EPERM — a double-forked grandchild cannot leave the worker's
  process group, so killing the group at the end of the call kills it too;
- without network, socket(AF_UNIX / AF_INET / AF_INET6): EPERM — Landlock covers only
  TCP, and two calls of one pool could otherwise talk over UDP on the shared loopback or
  over a unix socket in one of their directories. socketpair() stays allowed.

Built with pyseccomp like the base filter; `SeccompUnavailable` when it cannot be.
"""

from __future__ import annotations

import errno
import functools
import socket
from typing import Any

from ._seccomp import SeccompUnavailable, export


@functools.cache
def worker_filter(*, network: bool) -> bytes:
    """The BPF program (struct sock_filter array) a pool worker loads; built once."""
    try:
        import pyseccomp as sc  # type: ignore[import-untyped]
    except (ImportError, OSError, RuntimeError) as exc:
        raise SeccompUnavailable(f"pyseccomp/libseccomp not usable: {exc}") from None
    try:
        filt: Any = sc.SyscallFilter(sc.ALLOW)
        for name in ("setsid", "setpgid"):
            filt.add_rule(sc.ERRNO(errno.EPERM), name)
        if not network:
            for family in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6):
                filt.add_rule(sc.ERRNO(errno.EPERM), "socket", sc.Arg(0, sc.EQ, int(family)))
    except OSError as exc:
        raise SeccompUnavailable(f"libseccomp refused the pool filter: {exc}") from None
    return export(filt, "pool-seccomp-bpf")
