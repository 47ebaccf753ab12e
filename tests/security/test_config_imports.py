"""Checking a configuration never runs tool code (issue 11.13).

``importlib.util.find_spec("pkg.sub")`` imports ``pkg``: a configuration naming
``python: pkg.sub:fn`` ran ``pkg/__init__.py`` inside the engine (as root)
during ``sconnect check`` and hot reload, even when the reload was then refused.
Each test puts a package whose ``__init__.py`` writes a marker file when it is
imported where the engine will look for it, and asserts the marker never
appears:

- ``sconnect check`` (a real subprocess) with the package on its ``sys.path``,
  once where the function exists (check passes) and once where it does not
  (check fails, located), and once with the package beside the tool in tools.d/;
- a running server's hot reload of a tool naming the package, from ``sys.path``
  and from beside the tool file;
- a package an import-system finder maps to a directory on no ``sys.path``
  entry (as an editable install's finder does): found, not imported.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from engine.audit import query
from engine.config import load_config
from tests.conftest import REPO
from tests.engine.conftest import RunningServer, config_dir, start_server, state_dir  # noqa: F401

TOOL = """\
name: sneaky
description: Names a package whose import has effects.
permission_level: 0
python: {target}
parameters: {{type: object}}
"""


def booby_trapped(parent: Path, name: str, marker: Path) -> Path:
    """A package ``name`` under ``parent`` whose import writes ``marker``; ``name.sub`` defines ``fn``."""
    package = parent / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n")
    (package / "sub.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\n\ndef fn(**kwargs):\n    return kwargs\n"
    )
    return package


def sconnect(*args: str, path: Path | None = None) -> subprocess.CompletedProcess[str]:
    pythonpath = os.pathsep.join([str(REPO), *([str(path)] if path else [])])
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], cwd=REPO, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": pythonpath},
    )


@pytest.mark.parametrize(("target", "ok"), [("trapped.sub:fn", True), ("trapped.sub:missing", False)])
def test_check_does_not_import_a_package_on_sys_path(
    minimal_config: Path, tmp_path: Path, target: str, ok: bool
) -> None:
    marker = tmp_path / "imported.txt"
    booby_trapped(tmp_path / "site", "trapped", marker)
    (minimal_config / "tools.d" / "sneaky.yaml").write_text(TOOL.format(target=target))
    done = sconnect("check", "--config", str(minimal_config), path=tmp_path / "site")
    assert not marker.exists(), "checking the configuration imported the tool's package"
    if ok:
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode == 1
        assert "tools.d/sneaky.yaml:4:9: python: module 'trapped.sub' has no function 'missing'" in done.stderr


def test_check_does_not_import_a_package_beside_the_tool(minimal_config: Path, tmp_path: Path) -> None:
    marker = tmp_path / "imported.txt"
    booby_trapped(minimal_config / "tools.d", "trapped", marker)
    (minimal_config / "tools.d" / "sneaky.yaml").write_text(TOOL.format(target="trapped.sub:fn"))
    done = sconnect("check", "--config", str(minimal_config))
    assert done.returncode == 0, done.stderr
    assert not marker.exists()


@pytest.mark.parametrize("where", ["sys.path", "beside"])
async def test_reload_does_not_import_the_tool_package(
    start_server, config_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str  # noqa: F811
) -> None:
    marker = tmp_path / "imported.txt"
    if where == "sys.path":
        booby_trapped(tmp_path / "site", "trapped_on_path", marker)
        monkeypatch.syspath_prepend(str(tmp_path / "site"))
        target = "trapped_on_path.sub:fn"
    else:
        booby_trapped(config_dir / "tools.d", "trapped_beside", marker)
        target = "trapped_beside.sub:fn"
    server: RunningServer = await start_server(config_dir, reload_interval_s=0.1)
    (config_dir / "tools.d" / "sneaky.yaml").write_text(TOOL.format(target=target))
    with trio.fail_after(30):
        # Polled until the reload that took the new tool in (the watcher decides when it reloads).
        while True:
            records = await trio.to_thread.run_sync(lambda: query(server.settings.state_dir, kind="config_reload"))
            if any(r.outcome == "ok" and "sneaky" in r.to_dict()["details"]["tools"] for r in records):
                break
            await trio.sleep(0.05)
    assert not marker.exists(), "the reload imported the tool's package in the engine"


class EditableFinder(importlib.abc.MetaPathFinder):
    """What setuptools' editable-install finder does: map top-level names to directories."""

    def __init__(self, mapping: dict[str, Path]) -> None:
        self.mapping = mapping

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.mapping:
            return None
        where = self.mapping[fullname]
        return importlib.util.spec_from_file_location(
            fullname, where / "__init__.py", submodule_search_locations=[str(where)]
        )


def test_a_package_mapped_by_an_import_finder_is_found_not_imported(
    minimal_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "imported.txt"
    package = booby_trapped(tmp_path / "elsewhere", "trapped_editable", marker)
    monkeypatch.setattr(sys, "meta_path", [EditableFinder({"trapped_editable": package}), *sys.meta_path])
    (minimal_config / "tools.d" / "sneaky.yaml").write_text(TOOL.format(target="trapped_editable.sub:fn"))
    assert load_config(minimal_config).tools["sneaky"].python_package == str(package)
    assert not marker.exists()
