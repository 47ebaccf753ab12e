"""`Spec`: what to run in the sandbox and under which limits.

A Spec is a frozen value built by the engine from a tool's YAML; the sandbox never reads
configuration itself. Paths are host paths; inside a namespaces sandbox every bound path
appears at the same path as on the host, so arguments that name paths mean the same
thing under both backends.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Literal

import attrs

from ._errors import SpecError

Isolation = Literal["namespaces", "process", "pool"]


def _positive(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise SpecError(f"{attribute.name} must be a positive number, got {value!r}")


def _absolute_paths(
    instance: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]
) -> None:
    for path in value:
        if not isinstance(path, str) or not os.path.isabs(path):
            raise SpecError(f"{attribute.name}: {path!r} is not an absolute path")


def _env(
    instance: object, attribute: attrs.Attribute[Any], value: tuple[tuple[str, str], ...]
) -> None:
    for item in value:
        if (
            not isinstance(item, tuple)
            or len(item) != 2
            or not all(isinstance(part, str) for part in item)
            or not item[0]
            or "=" in item[0]
            or any("\0" in part for part in item)
        ):
            raise SpecError(f"env: {item!r} is not a (NAME, value) pair of strings")


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _env_pairs(value: Any) -> tuple[tuple[str, str], ...]:
    items = value.items() if isinstance(value, dict) else value
    return tuple(tuple(item) for item in items)


@attrs.frozen
class Spec:
    """One tool invocation's program, limits and visibility.

    Exactly one of `argv` / `python` is set; `SpecError` otherwise (raised at
    construction). Limits default to safe values; every size is in bytes and every
    duration in seconds.
    """

    # program + arguments to exec (argv[0] is looked up on the sandbox's PATH if relative)
    argv: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    # "package.module:function", called by the runner with the JSON arguments as kwargs
    python: str | None = None
    # host directories (or single-module files) bound read-only and put on sys.path;
    # only these are exposed, never their parent
    python_packages: tuple[str, ...] = attrs.field(
        default=(), converter=_strings, validator=_absolute_paths
    )
    timeout_s: float = attrs.field(default=10.0, validator=_positive)  # wall clock
    cpu_time_s: float = attrs.field(default=5.0, validator=_positive)  # RLIMIT_CPU
    memory_bytes: int = attrs.field(default=512 * 2**20, validator=_positive)  # RLIMIT_AS
    max_output_bytes: int = attrs.field(default=2**20, validator=_positive)  # stdout kept
    max_stderr_bytes: int = attrs.field(default=8192, validator=_positive)  # stderr tail
    max_open_files: int = attrs.field(default=64, validator=_positive)  # RLIMIT_NOFILE
    max_processes: int = attrs.field(default=64, validator=_positive)  # RLIMIT_NPROC
    max_file_bytes: int = attrs.field(default=64 * 2**20, validator=_positive)  # RLIMIT_FSIZE
    # the host network as it is (True), or none (False); see proxy_socket for a way out
    network: bool = False
    # host path of a Unix socket (the engine's egress proxy for this call): with it the
    # tool keeps its own network namespace, sees the socket at PROXY_MOUNT, and reaches
    # it through a forwarder on 127.0.0.1:PROXY_PORT (HTTP(S)_PROXY point there).
    # Namespaces isolation only; network must be False.
    proxy_socket: str | None = None
    isolation: Isolation = "namespaces"
    # extra host paths visible read-only / read-write
    readable_paths: tuple[str, ...] = attrs.field(
        default=(), converter=_strings, validator=_absolute_paths
    )
    # must be writable by the sandbox user (SANDBOX_UID when the engine runs as root)
    writable_paths: tuple[str, ...] = attrs.field(
        default=(), converter=_strings, validator=_absolute_paths
    )
    # host path to start in; None = the fresh per-call work dir. Must lie inside the work
    # dir, a writable path, a readable path or a python package dir.
    cwd: str | None = None
    # the tool's exact environment; os.environ of the engine is never copied
    env: tuple[tuple[str, str], ...] = attrs.field(
        default=(), converter=_env_pairs, validator=_env
    )
    # parent of the per-call work dirs; None = a private dir under tempfile.gettempdir()
    work_root: str | None = None

    def __attrs_post_init__(self) -> None:
        if bool(self.argv) == (self.python is not None):
            raise SpecError("exactly one of argv and python must be given")
        if self.python is not None:
            module, sep, function = self.python.partition(":")
            if not sep or not module or not function.isidentifier():
                raise SpecError(f"python: {self.python!r} is not 'package.module:function'")
            if not all(part.isidentifier() for part in module.split(".")):
                raise SpecError(f"python: {module!r} is not a module name")
        if any(not isinstance(arg, str) or "\0" in arg for arg in self.argv):
            raise SpecError("argv items must be strings without NUL bytes")
        if self.isolation not in ("namespaces", "process", "pool"):
            raise SpecError(
                f"isolation: {self.isolation!r} is not 'namespaces', 'process' or 'pool'"
            )
        if self.cwd is not None and not os.path.isabs(self.cwd):
            raise SpecError(f"cwd: {self.cwd!r} is not an absolute path")
        if self.proxy_socket is not None:
            if not isinstance(self.proxy_socket, str) or not os.path.isabs(self.proxy_socket):
                raise SpecError(f"proxy_socket: {self.proxy_socket!r} is not an absolute path")
            if self.network:
                raise SpecError("proxy_socket needs network=False: the proxy is the tool's only way out")
            if self.isolation != "namespaces":
                raise SpecError(
                    f"proxy_socket needs isolation 'namespaces' (not {self.isolation!r}): only a "
                    "bubblewrap sandbox gives the tool a network namespace whose only exit is the proxy"
                )
        if self.work_root is not None and not os.path.isabs(self.work_root):
            raise SpecError(f"work_root: {self.work_root!r} is not an absolute path")
