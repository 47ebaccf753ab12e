"""A pool tool's Python package is made reachable for the sandbox user when its pool
starts, not on every call (the fork server imports the tool then, once):

- test_an_unreachable_package_is_copied_when_the_pool_starts: a package under a 0700
  directory (as a checkout under /root is) cannot be read by the sandbox user, yet its
  pool runs the tool as that user (from a copy), call after call, in one pool (root only: without root the
  engine's own uid runs the tools and reaches the package itself).
"""

# ruff: noqa: F811  (pytest fixtures imported from the conftest are parameters here)
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

import sandbox
from tests.sandbox.conftest import require_root

pytestmark = pytest.mark.skipif(
    sandbox.detect().pool_problem() is not None, reason=f"no pool here: {sandbox.detect().pool_problem()}"
)

MODULE = """
import os

def where(**kwargs):
    return {"file": __file__, "uid": os.getuid()}
"""


@pytest.fixture
def private_package() -> Iterator[str]:
    """A package `hidden_tools` in a directory only its owner may enter."""
    outer = tempfile.mkdtemp(prefix="sconnect-private-")  # 0700
    root = os.path.join(outer, "hidden_tools")
    os.mkdir(root)
    with open(os.path.join(root, "__init__.py"), "w") as handle:
        handle.write("")
    with open(os.path.join(root, "where.py"), "w") as handle:
        handle.write(MODULE)
    yield root
    for name in ("where.py", "__init__.py"):
        os.unlink(os.path.join(root, name))
    os.rmdir(root)
    os.rmdir(outer)


async def test_an_unreachable_package_is_copied_when_the_pool_starts(private_package: str, work_root: str) -> None:
    require_root("only a root engine runs tools as the sandbox user")
    assert os.stat(os.path.dirname(private_package)).st_mode & 0o777 == 0o700
    spec = sandbox.Spec(
        python="hidden_tools.where:where", python_packages=(private_package,), isolation="pool", work_root=work_root
    )
    async with sandbox.open_pools() as pools:
        files = set()
        for _ in range(3):
            result = await sandbox.run(spec, {})
            assert result.status == "ok", result
            assert result.output["uid"] != 0, result
            files.add(result.output["file"])
        assert len(pools.pools) == 1
    assert len(files) == 1, files  # every call ran the module the one pool imported

