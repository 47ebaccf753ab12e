"""The one entry point: `run(spec, arguments)`, and choosing a backend for a Spec.

`Backend` is the seam for other executors (a warm fork-server sandbox, a container
runtime, a remote executor): anything with a `name` and an async `run(spec, arguments)
-> Result` honouring the contract below. Nothing here assumes one process tree per call.

Contract of every backend's `run`:
- the JSON of `arguments` goes to the tool's stdin, written concurrently with reading
  stdout (kept up to `max_output_bytes`, the rest discarded) and stderr (last
  `max_stderr_bytes` kept): neither a huge input nor a huge output can block the caller;
- returns a `Result` for everything the tool does, limits and timeouts included;
- raises `SpecError` for an unusable Spec and `SpawnError` when the sandbox cannot start;
- with `go`, awaits it exactly once, after the start-up work that needs no input (a
  warm worker taken, a sandbox being built) and strictly before the tool gets its input
  or runs any code of its own; if `go` raises (or the call is cancelled in it), nothing
  of the tool runs, every process started is killed and reaped, and the exception
  propagates unchanged;
- on Trio cancellation kills the whole sandbox (SIGTERM, a short grace, SIGKILL), reaps
  it, removes the work dir, then re-raises `trio.Cancelled`.
"""

from __future__ import annotations

from typing import Any, Protocol

from ._call import Go
from ._detect import Capabilities, detect
from ._errors import IsolationUnavailable
from ._namespaces import NamespacesBackend
from ._pool import PoolBackend
from ._process_backend import ProcessBackend
from ._result import Result
from ._spec import Spec


class Backend(Protocol):
    """An executor of Specs. See the module docstring for the contract of `run`."""

    @property
    def name(self) -> str: ...

    async def run(self, spec: Spec, arguments: Any, *, go: Go | None = None) -> Result: ...


def backend_for(spec: Spec, caps: Capabilities | None = None) -> Backend:
    """The backend that gives `spec` the isolation it declares.

    `isolation: namespaces` where bubblewrap is unusable raises `IsolationUnavailable`
    (never a silent downgrade); `isolation: process` always gets the process backend;
    `isolation: pool` needs what `Capabilities.pool_problem` lists (never weakened, even
    with the opt-out).
    Without the seccomp filter every tool is refused the same way, unless the operator
    opted out (`Capabilities.allow_weak`, ``SCONNECT_SANDBOX_ALLOW_WEAK=1``).
    """
    caps = caps if caps is not None else detect()
    weak = caps.weak_problem()
    if weak is not None and not caps.allow_weak:
        raise IsolationUnavailable(
            f"the sandbox would run this tool weaker than documented: {weak}; install "
            "pyseccomp and libseccomp2, or set SCONNECT_SANDBOX_ALLOW_WEAK=1 to accept it"
        )
    seccomp = caps.seccomp_problem is None
    if spec.isolation == "process":
        return ProcessBackend(
            python=caps.python,
            landlock_abi=caps.landlock_abi,
            seccomp=seccomp,
            require_private_proc=not caps.allow_weak,
        )
    if spec.isolation == "pool":
        problem = caps.pool_problem()
        if problem is not None:
            raise IsolationUnavailable(
                f"isolation 'pool' is unavailable: {problem}; "
                "declare isolation: namespaces (or process) for this tool"
            )
        assert caps.bwrap is not None
        return PoolBackend(
            bwrap=caps.bwrap,
            setpriv=caps.setpriv,
            python=caps.python,
            disable_userns=caps.disable_userns,
        )
    problem = caps.namespaces_problem()
    if problem is not None:
        raise IsolationUnavailable(
            f"isolation 'namespaces' is unavailable: {problem}; "
            "install bubblewrap or declare isolation: process for this tool"
        )
    assert caps.bwrap is not None
    return NamespacesBackend(
        bwrap=caps.bwrap,
        setpriv=caps.setpriv,
        python=caps.python,
        seccomp=seccomp,
        disable_userns=caps.disable_userns,
    )


async def run(
    spec: Spec, arguments: Any, *, backend: Backend | None = None, go: Go | None = None
) -> Result:
    """Run one tool call in a sandbox and return its Result.

    `backend` defaults to `backend_for(spec)`. Cancellation: the sandbox is killed and
    reaped, its work dir removed, and `trio.Cancelled` re-raised.

    `go`: awaited once, while the sandbox starts, before the tool receives any input or
    runs anything of its own (pool: a ready worker taken and in its cgroup; namespaces:
    bubblewrap building the sandbox, its pid 1 held at its block fd; process: before the
    supervisor is spawned). What it raises propagates unchanged, and then nothing of the
    tool has run and no process of the call is left.
    """
    if backend is None:
        backend = backend_for(spec)
    if go is None:
        return await backend.run(spec, arguments)
    return await backend.run(spec, arguments, go=go)
