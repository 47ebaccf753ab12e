"""The pool's fork server binds its symbols at load time, and no tool sees how.

The fork server starts once more with LD_BIND_NOW (so that no worker looks up a library
function the server never called), then puts the tool's environment back exactly:

- test_server_runs_bound_now: the fork server's image was started with LD_BIND_NOW=1
  (its /proc/PID/environ, the environment of its last exec).
- test_function_environment_is_the_spec_env: a Python function in a pool worker sees
  exactly the Spec's environment plus its TMPDIR, no LD_BIND_NOW.
- test_tool_own_ld_bind_now_is_kept: a Spec that sets LD_BIND_NOW itself keeps its value.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

import sandbox
from tests.sandbox.conftest import TOKEN_VAR

SOURCE = "import os\n\n\ndef environment():\n    return dict(os.environ)\n"


@pytest.fixture
def pool_tool(runner_for: Any) -> Any:
    problem = sandbox.detect().pool_problem()
    if problem is not None:
        pytest.skip(problem)
    return runner_for("pool")


@pytest.fixture
def package(shared_dir: str) -> str:
    root = os.path.join(shared_dir, "pkgs", "envtool")
    os.makedirs(root)
    for path in (os.path.dirname(root), root):
        os.chmod(path, 0o755)
    with open(os.path.join(root, "__init__.py"), "w") as handle:
        handle.write(SOURCE)
    os.chmod(os.path.join(root, "__init__.py"), 0o644)
    return root


def _fork_servers(pools: sandbox.PoolSet) -> list[int]:
    found = []
    for pool in pools.pools.values():
        assert pool.pid1 is not None
        with open(f"/proc/{pool.pid1}/task/{pool.pid1}/children") as handle:
            found += [int(pid) for pid in handle.read().split()]
    return found


async def test_server_runs_bound_now(pool_tool: Any, package: str) -> None:
    async with sandbox.open_pools() as pools:
        result = await pool_tool.run(python="envtool:environment", python_packages=(package,))
        assert result.status == "ok", result
        servers = _fork_servers(pools)
        assert servers
        for pid in servers:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                assert b"LD_BIND_NOW=1" in handle.read().split(b"\0")


async def test_function_environment_is_the_spec_env(pool_tool: Any, package: str) -> None:
    async with sandbox.open_pools():
        result = await pool_tool.run(python="envtool:environment", python_packages=(package,), env={"GREETING": "hi"})
    assert result.status == "ok", result
    environment = dict(result.output)
    assert environment.pop("TMPDIR").startswith("/")
    assert environment == {"GREETING": "hi", TOKEN_VAR: pool_tool.token}


async def test_tool_own_ld_bind_now_is_kept(pool_tool: Any, package: str) -> None:
    async with sandbox.open_pools():
        result = await pool_tool.run(
            python="envtool:environment", python_packages=(package,), env={"LD_BIND_NOW": "yes"}
        )
    assert result.status == "ok", result
    assert result.output["LD_BIND_NOW"] == "yes"
