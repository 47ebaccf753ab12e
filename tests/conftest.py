"""Fixtures shared by the whole suite."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent


@pytest.fixture
def minimal_config(tmp_path: Path) -> Path:
    """A private, writable copy of the small valid configuration in tests/data/minimal."""
    root = tmp_path / "config"
    shutil.copytree(DATA / "minimal", root)
    return root
