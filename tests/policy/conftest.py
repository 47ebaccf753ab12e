"""Policy fixtures: the flawed example's tools with a policy written by each test."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.config import Config, load_config
from tests.conftest import SHIPPED_CONFIG

DATA = Path(__file__).resolve().parents[1] / "data"
FLAWED = DATA / "flawed-policy"
SHIPPED = SHIPPED_CONFIG  # a pristine copy of the shipped example, never the checkout itself

HEADER = """\
name: under-test
description: Written by the test.
roles:
  user: {}
  admin: {}
rules:
"""

# Roles of a subject, and a rule allowing levels 0-2 to both, as the tests write them.
USER = frozenset({"user"})
ADMIN = frozenset({"admin"})

ALLOW_ALL_LOW = """\
  - id: low
    effect: allow
    subjects: {roles: [user, admin]}
    targets: {levels: [0, 1, 2]}
"""


@pytest.fixture
def policy(tmp_path: Path) -> Callable[[str], Config]:
    """Load the flawed example's tools and resources with ``rules`` (YAML list items) as the policy."""

    def load(rules: str) -> Config:
        root = tmp_path / "cfg"
        if not root.exists():
            shutil.copytree(FLAWED / "tools.d", root / "tools.d")
            shutil.copytree(FLAWED / "resources.d", root / "resources.d")
            (root / "policies").mkdir()
        (root / "policies" / "p.yaml").write_text(HEADER + rules)
        return load_config(root)

    return load
