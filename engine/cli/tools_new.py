"""``sconnect tools new NAME``: write a working Python tool, its YAML and its module, into tools.d/.

The two files work as written: ``sconnect check`` passes and ``sconnect tools
run NAME --args '{"name": "Ada"}'`` runs the function in the sandbox.  The
module sits beside the YAML (``python: NAME:run``), so the name is also a
Python module name: lower-case letters, digits and ``_``, not a keyword and not
a standard-library module (the sandbox's runner would import that one).

Error handling: a bad name, a name some file in tools.d/ already declares or
uses, or no configuration directory to write into raise :class:`UsageError`
(exit 2) before anything is written; the files are created exclusively, so a
file that appears meanwhile is never overwritten.
"""

from __future__ import annotations

import argparse
import keyword
import os
import re
import sys
from pathlib import Path
from typing import Any

from ..config import resolve_config_dir
from ..config.paths import is_config_dir
from ..config.yamldoc import read_document
from ..errors import UsageError

_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")

YAML_TEMPLATE = """\
# A Python tool: `python: {name}:run` is the function run() in {name}.py, beside
# this file. It runs in the sandbox (a fresh process per call, no network, an
# empty working directory, the standard library only); the engine never imports
# it. Arguments are checked against `parameters`, then passed as keyword
# arguments; what run() returns (JSON-serialisable) is the result.
name: {name}
description: Greets someone by name. (Written by `sconnect tools new`; say what yours does.)
# 0 runs without approval; 1 needs the user's, 2 an admin's; 3 only where a policy names it.
permission_level: 0
python: {name}:run
parameters:
  type: object
  properties:
    name:
      type: string
      description: Who to greet.
      minLength: 1
      maxLength: 100
  required: [name]
  additionalProperties: false
sandbox:
  timeout: 5s
  cpu_time: 2s
  memory: 256MiB
  max_output: 16KiB
"""

MODULE_TEMPLATE = '''\
"""The tool `{name}` (see {name}.yaml beside this file): run() is called in the sandbox.

The arguments arrive as keyword arguments, already checked against the tool's
`parameters` schema; return JSON-serialisable data. An exception ends the call
with status "error" and its message in the tool's stderr. Only the standard
library is available, and the engine never imports this file.
"""

from __future__ import annotations


def run(name: str) -> dict[str, str]:
    """Greet ``name``."""
    return {{"greeting": f"Hello, {{name}}!"}}
'''


def register(sub: Any) -> None:
    from .args import add_config_option

    parser = sub.add_parser("new", help="write a new Python tool (NAME.yaml and NAME.py) into tools.d/")
    parser.add_argument("name", help="the tool's name, also its module's: a-z, 0-9 and _, starting with a letter")
    add_config_option(parser)
    parser.set_defaults(run=run_new)


def run_new(args: argparse.Namespace) -> int:
    root = _target(args.config)
    name = args.name
    _check_name(name)
    tools = root / "tools.d"
    _check_free(tools, name)
    tools.mkdir(exist_ok=True)
    yaml_path, module_path = tools / f"{name}.yaml", tools / f"{name}.py"
    _create(module_path, MODULE_TEMPLATE.format(name=name))
    try:
        _create(yaml_path, YAML_TEMPLATE.format(name=name))
    except BaseException:
        module_path.unlink(missing_ok=True)
        raise
    config = "" if args.config is None else f" --config {args.config}"
    print(f"wrote {_shown(yaml_path)} and {_shown(module_path)}")
    print("try it:")
    print(f"  sconnect check{config}")
    print(f"  sconnect tools run {name}{config} --args '{{\"name\": \"Ada\"}}'")
    return 0


def _shown(path: Path) -> str:
    """The path as the user would type it: relative when it is under the current directory."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _target(explicit: str | None) -> Path:
    root = resolve_config_dir(explicit)
    if explicit is None and not is_config_dir(Path.cwd()):
        # Never write into the shipped example from elsewhere: say where to write instead.
        raise UsageError("the current directory is not a configuration directory: pass --config DIR")
    if not root.is_dir():
        raise UsageError(f"{root}: no such directory")
    return root


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        hint = " (use '_' instead of '-': the name is also a Python module's)" if "-" in name else ""
        raise UsageError(
            f"{name!r} is not a tool name: a lower-case letter, then letters, digits or '_', 64 at most{hint}"
        )
    if keyword.iskeyword(name) or name in sys.stdlib_module_names:
        raise UsageError(f"{name!r} is a Python keyword or standard-library module name: choose another")


def _check_free(tools: Path, name: str) -> None:
    for taken in (f"{name}.yaml", f"{name}.yml", f"{name}.py", name):
        if os.path.lexists(tools / taken):
            raise UsageError(f"{tools / taken} already exists: choose another name")
    if not tools.is_dir():
        return
    for path in sorted(tools.iterdir()):
        if path.suffix not in (".yaml", ".yml") or path.name.startswith("."):
            continue
        doc = read_document(path, path.name, follow_symlinks=False)
        if not isinstance(doc, list) and isinstance(doc.data, dict) and doc.data.get("name") == name:
            raise UsageError(f"a tool named {name!r} is already declared in {path}")


def _create(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        stream.write(text)
