"""Loading the same directory again: what a load remembers (parses, schema verdicts, parsed modules)
never hides an edit.

The loader remembers a file's parse (by its bytes' digest; each read gets its own copy of the
data), that a value passed its schema (by the value's canonical JSON) and
a module's top-level names (by its source's digest). Each test loads, edits, and loads
again in one process, so a remembered verdict would show as a problem not reported.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_config
from engine.config.yamldoc import Document, read_document
from engine.errors import ConfigError

TOOL = (
    "name: greet\ndescription: {description}\npermission_level: {level}\npython: greet:run\n"
    "parameters: {parameters}\n"
)


def messages(root: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(root)
    return [str(problem) for problem in caught.value.problems]


def write_tool(
    root: Path, *, level: str = "0", description: str = "Greets.", parameters: str = "{type: object}"
) -> None:
    text = TOOL.format(level=level, description=description, parameters=parameters)
    (root / "tools.d" / "greet.yaml").write_text(text)


def test_an_edit_that_breaks_a_file_is_reported_after_a_clean_load(minimal_config: Path) -> None:
    (minimal_config / "tools.d" / "greet.py").write_text("def run():\n    return 1\n")
    write_tool(minimal_config)
    assert "greet" in load_config(minimal_config).tools
    # Values that JSON keeps apart and Python compares equal (True == 1): each has its own verdict.
    write_tool(minimal_config, level="true")
    assert messages(minimal_config) == ["tools.d/greet.yaml:3:19: permission_level: True is not one of 0, 1, 2, 3"]
    write_tool(minimal_config, level="'0'")
    assert messages(minimal_config) == ["tools.d/greet.yaml:3:19: permission_level: '0' is not one of 0, 1, 2, 3"]
    write_tool(minimal_config)
    assert load_config(minimal_config).tools["greet"].permission_level == 0


def test_parameters_that_stop_being_a_schema_are_reported(minimal_config: Path) -> None:
    (minimal_config / "tools.d" / "greet.py").write_text("def run():\n    return 1\n")
    write_tool(minimal_config, parameters="{type: object, properties: {n: {type: integer}}}")
    assert "greet" in load_config(minimal_config).tools
    write_tool(minimal_config, parameters="{type: object, properties: {n: {type: integr}}}")
    assert messages(minimal_config) == [
        "tools.d/greet.yaml:5:51: parameters.properties.n.type: 'integr' is not a valid JSON Schema type "
        "(expected one of array, boolean, integer, null, number, object, string)"
    ]


def test_a_value_that_is_not_json_is_checked_on_every_load(minimal_config: Path) -> None:
    (minimal_config / "tools.d" / "greet.py").write_text("def run():\n    return 1\n")
    write_tool(minimal_config, description="2026-11-30")  # YAML reads a date, not a string
    expected = ["tools.d/greet.yaml:2:14: description: datetime.date(2026, 11, 30) is not of type 'string'"]
    assert messages(minimal_config) == expected
    assert messages(minimal_config) == expected


def test_a_module_edited_between_loads_is_parsed_again(minimal_config: Path) -> None:
    module = minimal_config / "tools.d" / "greet.py"
    module.write_text("def run():\n    return 1\n")
    write_tool(minimal_config)
    assert "greet" in load_config(minimal_config).tools
    module.write_text("def other():\n    return 1\n")
    assert messages(minimal_config) == ["tools.d/greet.yaml:4:9: python: module 'greet' has no function 'run'"]
    module.write_text("def run(:\n")
    assert messages(minimal_config) == [
        "tools.d/greet.yaml:4:9: python: module 'greet' is not valid Python: invalid syntax (line 1)"
    ]
    # The same broken source again: the remembered reason, worded the same.
    assert messages(minimal_config) == [
        "tools.d/greet.yaml:4:9: python: module 'greet' is not valid Python: invalid syntax (line 1)"
    ]
    module.write_text("def run():\n    return 2\n")
    assert "greet" in load_config(minimal_config).tools


def test_a_yaml_edit_between_loads_is_read(minimal_config: Path) -> None:
    (minimal_config / "tools.d" / "greet.py").write_text("def run():\n    return 1\n")
    write_tool(minimal_config, description="Greets.")
    assert load_config(minimal_config).tools["greet"].description == "Greets."
    write_tool(minimal_config, description="Greets warmly.")
    assert load_config(minimal_config).tools["greet"].description == "Greets warmly."
    (minimal_config / "tools.d" / "greet.yaml").write_text("name: greet\nname: twice\n")
    assert messages(minimal_config) == ["tools.d/greet.yaml:2:1: duplicate key 'name' (first set on line 1)"]


def test_each_read_of_a_file_gets_its_own_data(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("name: x\nlist: [1, {a: b}]\n")
    first = read_document(path, "x.yaml")
    assert isinstance(first, Document)
    first.data["name"] = "changed"
    first.data["list"][1]["a"] = "changed"
    second = read_document(path, "y.yaml")
    assert isinstance(second, Document)
    assert second.data == {"name": "x", "list": [1, {"a": "b"}]}
    assert second.file == "y.yaml" and second.locate(["list", 1, "a"]) == (2, 15)
    second.data["list"].append(2)
    third = read_document(path, "x.yaml")
    assert isinstance(third, Document) and third.data == {"name": "x", "list": [1, {"a": "b"}]}
