"""Fixtures for the sandbox tests: real processes, real bubblewrap, no mocks.

Every test runs its tools with a unique `SCONNECT_SANDBOX_TEST` token in their
environment; after the test, no process on the host may carry that token and the test
process may have no child left (`no_leftovers`, autouse).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

import sandbox

TOKEN_VAR = "SCONNECT_SANDBOX_TEST"
# the uid tools run as: the sandbox's own when the engine (here: the tests) is root
TOOL_UID = sandbox.SANDBOX_UID if os.geteuid() == 0 else os.geteuid()


def give_to_sandbox(path: str) -> None:
    """Make `path` the tools' own (a chown only a root engine needs, and can, do)."""
    if os.geteuid() == 0:
        os.chown(path, sandbox.SANDBOX_UID, sandbox.SANDBOX_GID)


def require_root(why: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"needs root: {why}")
PY = ("/usr/bin/python3", "-I", "-S", "-c")
BACKENDS = ("namespaces", "process")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a test that needs more than a few seconds")


def processes_with(token: str) -> list[int]:
    needle = f"{TOKEN_VAR}={token}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                if needle in handle.read():
                    found.append(int(name))
        except OSError:
            continue
    return found


def children_of(pid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        if int(stat[stat.rindex(b")") + 2 :].split()[1]) == pid:
            found.append(int(name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
        return stat[stat.rindex(b")") + 2 :].split()[0] != b"Z"
    except OSError:
        return False


def wait_until(condition: Any, *, bound_s: float = 15.0) -> bool:
    """Poll `condition` until true; False if it never is within a generous bound.

    For what the kernel finishes asynchronously (a reaped namespace's /proc entries):
    the bound is a safety net against hanging, not a timing assertion.
    """
    deadline = time.monotonic() + bound_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Any:
    """`wait_until` for test modules (conftest modules are not importable by name)."""
    return wait_until


@pytest.fixture
def token() -> str:
    return uuid.uuid4().hex


@pytest.fixture(autouse=True)
def no_leftovers(token: str) -> Iterator[None]:
    before = set(children_of(os.getpid()))
    yield

    def leftovers() -> tuple[list[int], list[int]]:
        kids = [pid for pid in children_of(os.getpid()) if pid not in before]
        return [pid for pid in processes_with(token) if alive(pid)], kids

    if not wait_until(lambda: leftovers() == ([], [])):
        raise AssertionError(f"processes left over (token, children): {leftovers()}")


@pytest.fixture
def token_processes(token: str) -> Any:
    """Pids of host processes carrying this test's token (alive ones, zombies excluded)."""
    return lambda: [pid for pid in processes_with(token) if alive(pid)]


@pytest.fixture
def shared_dir() -> Iterator[str]:
    """A host directory under /tmp that the sandbox user can traverse (0755).

    pytest's tmp_path lives under a 0700 directory the sandbox user cannot reach.
    """
    path = tempfile.mkdtemp(prefix="sconnect-sbtest-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def work_root(shared_dir: str) -> str:
    path = os.path.join(shared_dir, "work")
    os.mkdir(path, 0o711)
    return path


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@attrs.frozen
class Runner:
    """Builds Specs that carry the test token and runs them."""

    isolation: str
    token: str
    work_root: str

    def spec(self, **kwargs: Any) -> sandbox.Spec:
        env = dict(kwargs.pop("env", {}))
        env[TOKEN_VAR] = self.token
        kwargs.setdefault("work_root", self.work_root)
        kwargs.setdefault("isolation", self.isolation)
        return sandbox.Spec(env=tuple(env.items()), **kwargs)

    async def run(self, arguments: Any = None, **kwargs: Any) -> sandbox.Result:
        return await sandbox.run(self.spec(**kwargs), arguments if arguments is not None else {})

    async def py(self, code: str, arguments: Any = None, **kwargs: Any) -> sandbox.Result:
        return await self.run(arguments, argv=(*PY, code), **kwargs)


@pytest.fixture
def tool(backend: str, token: str, work_root: str) -> Runner:
    return Runner(backend, token, work_root)


@pytest.fixture
def runner_for(token: str, work_root: str) -> Any:
    """A factory of Runners for a given isolation, for tests that use both at once."""
    return lambda isolation: Runner(isolation, token, work_root)


def _usable(backend: str) -> str | None:
    caps = sandbox.detect()
    if backend == "pool":
        return caps.pool_problem()
    if backend == "namespaces" and caps.default_backend != "namespaces":
        return "no namespaces backend here"
    return None


@pytest.fixture(params=("namespaces", "process", "pool"))
def any_tool(request: pytest.FixtureRequest, runner_for: Any) -> Any:
    """A Runner of each backend in turn (skipped where the host has no such backend)."""
    problem = _usable(str(request.param))
    if problem is not None:
        pytest.skip(problem)
    return runner_for(request.param)


@pytest.fixture
def ns_tool(token: str, work_root: str) -> Runner:
    return Runner("namespaces", token, work_root)
