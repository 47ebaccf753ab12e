"""Fixtures shared by the whole suite."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent


def processes_with(marker: str) -> list[int]:
    """Pids whose command line holds ``marker`` (how tests find a tool's process, or its absence)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture
def minimal_config(tmp_path: Path) -> Path:
    """A private, writable copy of the small valid configuration in tests/data/minimal."""
    root = tmp_path / "config"
    shutil.copytree(DATA / "minimal", root)
    return root
