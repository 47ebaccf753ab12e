"""What tests of per-call memory cgroups share: the host's controller (or a skip saying why
there is none) and the cgroups this test process's engine made under it."""

from __future__ import annotations

import os

import pytest

from sandbox import _cgroup


def controller() -> _cgroup.Controller:
    found = _cgroup.probe()
    if found.controller is None:
        pytest.skip(f"no memory cgroup on this host: {found.why_not}")
    return found.controller


def ours(controller: _cgroup.Controller) -> list[str]:
    """The names of the per-call cgroups this process made that still exist."""
    prefix = f"sconnect-{os.getpid()}-"
    return [name for name in os.listdir(controller.parent) if name.startswith(prefix)]
