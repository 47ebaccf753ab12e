"""Where the host cannot run the pool, a tool declaring it gets a namespaces sandbox per
call (never weaker: a whole sandbox per call instead of a process in a shared one).

- test_pool_falls_back_to_namespaces_only_where_it_must: with the pool available a
  `pool` tool gets `pool`; on a simulated host without Landlock ABI 6, or without the
  seccomp filter, it gets `namespaces`; where namespaces cannot run either it keeps
  `pool` (and is refused with the pool's reason); other declarations are never changed.
  The real end-to-end case (the shipped calculator on a host without libseccomp, with
  the operator's weak opt-out) is test_sandbox_kernel.py::test_check_says_loudly_when_the_filter_is_missing.
"""

from __future__ import annotations

import attrs

import sandbox
from engine.config.model import SandboxNeeds, Tool
from engine.toolrun import isolation_for


def _tool(isolation: str) -> Tool:
    return Tool(
        name="t", description="t", parameters={"type": "object"}, permission_level=0, command=("/bin/true",),
        sandbox=SandboxNeeds(isolation=isolation),  # type: ignore[arg-type]
    )  # fmt: skip


def test_pool_falls_back_to_namespaces_only_where_it_must() -> None:
    able = sandbox.Capabilities(
        bwrap="/usr/bin/bwrap", user_namespaces=True, landlock_abi=7, default_backend="namespaces", summary="",
        running_as_root=False,
    )  # fmt: skip
    assert able.pool_problem() is None
    assert isolation_for(_tool("pool"), able) == "pool"
    old_kernel = attrs.evolve(able, landlock_abi=5)
    assert isolation_for(_tool("pool"), old_kernel) == "namespaces"
    no_filter = attrs.evolve(able, seccomp_problem="libseccomp missing", allow_weak=True)
    assert isolation_for(_tool("pool"), no_filter) == "namespaces"
    nothing = attrs.evolve(able, bwrap=None, landlock_abi=5)
    assert isolation_for(_tool("pool"), nothing) == "pool"
    for declared in ("namespaces", "process"):
        assert isolation_for(_tool(declared), old_kernel) == declared
        assert isolation_for(_tool(declared), able) == declared
