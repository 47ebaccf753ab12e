"""Locating a Python tool's module: an editable install's meta-path finder counts, and asking
it where a top-level package is runs none of that package's code."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

import pytest

from engine.config.modules import locate


class _MappedFinder(importlib.abc.MetaPathFinder):
    """What setuptools' editable install puts on sys.meta_path: a name mapped to a directory."""

    def __init__(self, name: str, directory: Path) -> None:
        self.name, self.directory = name, directory

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        return importlib.machinery.PathFinder.find_spec(fullname, [str(self.directory.parent)])


@pytest.fixture
def mapped_package(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    name = "sconnect_test_mapped_pkg"
    package = tmp_path / "elsewhere" / name
    (package / "sub").mkdir(parents=True)
    marker = tmp_path / "imported"
    (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "tool.py").write_text("def run(args):\n    return args\n")
    finder = _MappedFinder(name, package)
    sys.meta_path.append(finder)
    try:
        yield name, marker
    finally:
        sys.meta_path.remove(finder)
        sys.modules.pop(name, None)


def test_a_package_only_a_finder_knows_is_located_without_running_it(mapped_package: tuple[str, Path]) -> None:
    name, marker = mapped_package
    found = locate(f"{name}.sub.tool", search=(), installed=True)
    assert found is not None and found.source is not None and found.source.endswith("sub/tool.py")
    assert Path(found.top).name == name
    assert not marker.exists()


def test_a_missing_submodule_of_a_mapped_package_is_none(mapped_package: tuple[str, Path]) -> None:
    name, marker = mapped_package
    assert locate(f"{name}.sub.nothing", search=(), installed=True) is None
    assert locate("sconnect_no_such_package_anywhere", search=(), installed=True) is None
    assert not marker.exists()
