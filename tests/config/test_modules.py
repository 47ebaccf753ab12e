"""Python tools' modules: found beside the tool's file or on sys.path, from the filesystem alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_config
from engine.config.modules import locate
from engine.errors import ConfigError
from engine.toolrun import build_spec, package_dir
from tests.conftest import REPO, SHIPPED_CONFIG

TOOL = "name: greet\ndescription: Greets.\npermission_level: 0\npython: {target}\nparameters: {{type: object}}\n"


def messages(root: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(root)
    return [str(problem) for problem in caught.value.problems]


def add_tool(root: Path, target: str) -> None:
    (root / "tools.d" / "greet.yaml").write_text(TOOL.format(target=target))


def test_a_module_beside_the_tool_is_found_and_bound(minimal_config: Path, tmp_path: Path) -> None:
    (minimal_config / "tools.d" / "greet.py").write_text("def run(name):\n    return {'hi': name}\n")
    add_tool(minimal_config, "greet:run")
    tool = load_config(minimal_config).tools["greet"]
    assert tool.python_package == str(minimal_config / "tools.d" / "greet.py")
    spec = build_spec(tool, workspace=tmp_path, work_root=tmp_path)
    assert spec.python_packages == (str(minimal_config / "tools.d" / "greet.py"),)


@pytest.mark.parametrize("init", [True, False], ids=["package", "namespace package"])
def test_a_package_beside_the_tool_is_found(minimal_config: Path, init: bool) -> None:
    package = minimal_config / "tools.d" / "mytools"
    package.mkdir()
    if init:
        (package / "__init__.py").write_text("")
    (package / "greet.py").write_text("def run():\n    return 1\n")
    add_tool(minimal_config, "mytools.greet:run")
    assert load_config(minimal_config).tools["greet"].python_package == str(package)


def test_the_shipped_tools_are_found_on_sys_path() -> None:
    config = load_config(SHIPPED_CONFIG)
    assert config.tools["calculator"].python_package == str(REPO / "sconnect_tools")
    assert package_dir(config.tools["calculator"]) == str(REPO / "sconnect_tools")


@pytest.mark.parametrize(
    ("files", "target", "expected"),
    [
        ({"greet.py": "def other():\n    pass\n"}, "greet:run",
         "tools.d/greet.yaml:4:9: python: module 'greet' has no function 'run'"),
        ({"greet.py": "def run(:\n"}, "greet:run",
         "tools.d/greet.yaml:4:9: python: module 'greet' is not valid Python: invalid syntax (line 1)"),
        ({"json.py": "def run():\n    pass\n"}, "json:run",
         "tools.d/greet.yaml:4:9: python: tools.d/json.py has the name of a standard-library module, which the "
         "sandbox would import instead: rename it"),
        ({"mytools/__init__.py": ""}, "mytools.greet:run",
         "tools.d/greet.yaml:4:9: python: no Python module named 'mytools.greet': {root}/tools.d/mytools has no "
         "'greet'"),
        ({}, "greet:run",
         "tools.d/greet.yaml:4:9: python: no Python module named 'greet': put greet.py (or a package greet/) "
         "beside this file, or install it"),
    ],
)
def test_module_mistakes_are_located(minimal_config: Path, files: dict[str, str], target: str, expected: str) -> None:
    for name, text in files.items():
        path = minimal_config / "tools.d" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    add_tool(minimal_config, target)
    assert messages(minimal_config) == [expected.format(root=minimal_config)]


def test_a_huge_module_is_not_parsed(minimal_config: Path) -> None:
    (minimal_config / "tools.d" / "greet.py").write_text("def run():\n    pass\n" + "#" * (2 * 2**20))
    add_tool(minimal_config, "greet:run")
    assert messages(minimal_config) == [
        "tools.d/greet.yaml:4:9: python: module 'greet' cannot be read: larger than 1 MiB"
    ]


def test_locate_follows_the_import_system_order(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "pkg").mkdir(parents=True)  # a namespace portion: loses to a regular package later on the path
    (second / "pkg").mkdir(parents=True)
    (second / "pkg" / "__init__.py").write_text("")
    (second / "pkg" / "mod.py").write_text("")
    found = locate("pkg.mod", [str(first), str(second)])
    assert found is not None and found.top == str(second / "pkg") and found.source == str(second / "pkg" / "mod.py")
    # A namespace package spans all its portions.
    (second / "pkg" / "__init__.py").unlink()
    (first / "pkg" / "only_here.py").write_text("")
    assert locate("pkg.mod", [str(first), str(second)]) is not None
    assert locate("pkg.only_here", [str(first), str(second)]) is not None
    # A plain module has no submodules; a missing one is None.
    (tmp_path / "plain.py").write_text("")
    assert locate("plain.sub", [str(tmp_path)]) is None
    assert locate("absent", [str(tmp_path)]) is None


def test_a_built_spec_is_reused_only_for_what_it_was_built_from(minimal_config: Path, tmp_path: Path) -> None:
    """build_spec keeps the specs it built (engine.toolrun._SPECS): the same inputs give the
    same spec, and each input that changes (the allowed environment's values, the workspace,
    the work root, another tool object) gives the spec a fresh build gives."""
    import attrs

    (minimal_config / "tools.d" / "greet.py").write_text("def run(name):\n    return {'hi': name}\n")
    add_tool(minimal_config, "greet:run")
    (minimal_config / "tools.d" / "greet.yaml").write_text(
        TOOL.format(target="greet:run") + "sandbox:\n  workspace: read\n  env_allow: [GREETING]\n"
    )
    tool = load_config(minimal_config).tools["greet"]
    first = build_spec(tool, workspace=tmp_path / "a", work_root=tmp_path, environ={"GREETING": "hi"})
    assert build_spec(tool, workspace=tmp_path / "a", work_root=tmp_path, environ={"GREETING": "hi"}) is first
    assert dict(first.env)["GREETING"] == "hi" and first.cwd == str(tmp_path / "a")
    changed = build_spec(tool, workspace=tmp_path / "a", work_root=tmp_path, environ={"GREETING": "hello"})
    assert dict(changed.env)["GREETING"] == "hello"
    assert build_spec(tool, workspace=tmp_path / "b", work_root=tmp_path, environ={}).cwd == str(tmp_path / "b")
    assert build_spec(tool, workspace=tmp_path / "a", work_root=tmp_path / "w", environ={}).work_root == \
        str(tmp_path / "w")
    other = attrs.evolve(tool, sandbox=attrs.evolve(tool.sandbox, timeout=tool.sandbox.timeout * 2))
    assert build_spec(other, workspace=tmp_path / "a", work_root=tmp_path, environ={}).timeout_s == \
        2 * first.timeout_s
