"""A private copy of the shipped configuration (planner and weather included) and helpers to add agents to it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.conftest import copy_shipped
from tests.engine.conftest import copy_example_config, start_server, state_dir  # noqa: F401 (fixtures)


@pytest.fixture
def agents_config(tmp_path: Path) -> Path:
    target = copy_example_config(tmp_path / "config")
    copy_shipped("models.d", target / "models.d")
    return target


def add_agent(root: Path, name: str, module: str, yaml: str = "") -> None:
    """``agents.d/<name>.yaml`` naming ``<name>:Agent`` in ``agents.d/<name>.py`` (``module``'s source)."""
    (root / "agents.d" / f"{name}.py").write_text(textwrap.dedent(module))
    (root / "agents.d" / f"{name}.yaml").write_text(
        f"name: {name}\ndescription: A custom agent (test).\npython: {name}:Agent\n" + textwrap.dedent(yaml)
    )
