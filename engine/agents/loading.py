"""Import a custom agent's class (``python: module:Class``), or say precisely why not.

Where the module comes from: beside the agent's file first (``agents.d/planner.py``
or a package ``agents.d/planner/`` for ``planner:Planner``), else an installed
module (``mypackage.agents:Planner``, imported the usual way).

A module beside the file is imported under a private name that includes a
digest of its source (``sconnect_agent_<digest>_planner``), never under its own
name: it cannot shadow an installed module, two configurations can hold
different versions of it, and a changed file is a new module, so a reload picks
it up while turns already running keep the class they started with.  The same
source is imported once (remembered by digest), so reloading other files does
not run it again (only the latest version of each file is remembered).  Inside
a package, use relative imports.

Importing runs the module's top-level code in the engine (``sconnect check``
does too): agent code is operator code, trusted like the engine's own.

Errors are :class:`AgentLoadError` with one line meant for the operator: the
module that is missing, the place (``agents.d/planner.py:7``) and the exception
that stopped an import, a class that is not there (with the nearest names), not
a class, not a :class:`~engine.agents.base.BaseAgent`, or still abstract.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import threading
import traceback
from pathlib import Path
from types import ModuleType

from ..errors import ScalyticsError
from .base import BaseAgent

# Bounds on what is hashed to tell a module beside the file has changed.
MAX_PACKAGE_FILES = 500
_SKIPPED_DIRS = ("__pycache__",)


class AgentLoadError(ScalyticsError):
    """The class named by ``python:`` cannot be used; the message says why, and where."""


_lock = threading.Lock()  # load_config runs in worker threads (reloads) and in the CLI
_loaded: dict[tuple[str, str], ModuleType] = {}


def load_agent_class(spec: str, here: Path, root: Path) -> type[BaseAgent]:
    """The class ``spec`` (``module:Class``) names, for an agent file in directory ``here``.

    ``root`` is the configuration directory, for showing places relative to it.
    """
    module_name, _, class_name = spec.partition(":")
    with _lock:
        module = _import(module_name, here, root)
    found = getattr(module, class_name, None)
    if found is None:
        candidates = [name for name, value in vars(module).items()
                      if inspect.isclass(value) and issubclass(value, BaseAgent) and value is not BaseAgent]
        close = difflib.get_close_matches(class_name, candidates, n=1, cutoff=0.5)
        if close:
            hint = f" (did you mean {close[0]!r}?)"
        else:
            listed = ", ".join(sorted(candidates))
            hint = f" (its agent classes: {listed})" if candidates else " (it defines no BaseAgent)"
        raise AgentLoadError(f"module {module_name!r} has no class {class_name!r}{hint}")
    if not inspect.isclass(found):
        raise AgentLoadError(f"{spec} is a {type(found).__name__}, not a class extending engine.agents.BaseAgent")
    if not issubclass(found, BaseAgent):
        raise AgentLoadError(f"class {spec} does not extend engine.agents.BaseAgent")
    if inspect.isabstract(found):
        missing = ", ".join(sorted(getattr(found, "__abstractmethods__", ())))
        raise AgentLoadError(f"class {spec} is abstract: it does not implement {missing}")
    if not inspect.iscoroutinefunction(found.process_message):
        raise AgentLoadError(f"{spec}.process_message must be a coroutine function (async def)")
    return found


def agent_module_files(root: Path) -> list[Path]:
    """The Python files under ``agents.d/`` (what a change to should reload), bounded in number."""
    directory = Path(root) / "agents.d"
    found: list[Path] = []
    if not directory.is_dir():
        return found
    for current, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIPPED_DIRS)
        found += [Path(current) / name for name in sorted(files) if name.endswith(".py")]
        if len(found) >= MAX_PACKAGE_FILES:
            return found[:MAX_PACKAGE_FILES]
    return found


def _import(module_name: str, here: Path, root: Path) -> ModuleType:
    top, _, rest = module_name.partition(".")
    beside = _beside(top, here)
    if beside is None:
        return _import_installed(module_name, root)
    path, is_package = beside
    digest = _digest(path, is_package)
    key = (str(path), digest)
    module = _loaded.get(key)
    if module is None:
        module = _exec_beside(f"sconnect_agent_{digest[:16]}_{top}", path, is_package, root)
        _forget(str(path))  # earlier versions: a configuration still holding one keeps its class alive
        _loaded[key] = module
    if not rest:
        return module
    if not is_package:
        raise AgentLoadError(f"no module {module_name!r}: {_shown(path, root)} is a module, not a package")
    try:
        return importlib.import_module(f"{module.__name__}.{rest}")
    except ModuleNotFoundError:
        raise AgentLoadError(f"no module {module_name!r}: the package {_shown(path, root)} has no {rest!r}") from None
    except Exception as exc:
        raise AgentLoadError(f"module {module_name!r} failed to import: {_where(exc, root)}") from None


def _forget(path: str) -> None:
    """Drop what was imported from earlier versions of ``path`` (bounded memory over many edits)."""
    for key in [key for key in _loaded if key[0] == path]:
        name = _loaded.pop(key).__name__
        for loaded in [n for n in sys.modules if n == name or n.startswith(name + ".")]:
            del sys.modules[loaded]


def _beside(top: str, here: Path) -> tuple[Path, bool] | None:
    package = here / top
    if (package / "__init__.py").is_file():
        return package, True
    module = here / f"{top}.py"
    if module.is_file():
        return module, False
    return None


def _digest(path: Path, is_package: bool) -> str:
    hasher = hashlib.sha256()
    files = agent_files_under(path) if is_package else [path]
    for file in files:
        hasher.update(str(file.relative_to(path.parent)).encode() + b"\0")
        try:
            hasher.update(file.read_bytes())
        except OSError as exc:
            raise AgentLoadError(f"{file} cannot be read: {exc.strerror}") from None
        hasher.update(b"\0")
    return hasher.hexdigest()


def agent_files_under(package: Path) -> list[Path]:
    found: list[Path] = []
    for current, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIPPED_DIRS)
        found += [Path(current) / name for name in sorted(files) if name.endswith(".py")]
        if len(found) > MAX_PACKAGE_FILES:
            raise AgentLoadError(f"{package} holds more than {MAX_PACKAGE_FILES} Python files: refused")
    return found


def _exec_beside(name: str, path: Path, is_package: bool, root: Path) -> ModuleType:
    location = path / "__init__.py" if is_package else path
    spec = importlib.util.spec_from_file_location(
        name, location, submodule_search_locations=[str(path)] if is_package else None
    )
    if spec is None or spec.loader is None:
        raise AgentLoadError(f"{_shown(location, root)} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    # In sys.modules while it runs (and after): relative imports and dataclasses need it there.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        for loaded in [key for key in sys.modules if key == name or key.startswith(name + ".")]:
            del sys.modules[loaded]
        if not isinstance(exc, Exception):
            raise
        raise AgentLoadError(f"module {path.stem!r} failed to import: {_where(exc, root)}") from None
    return module


def _import_installed(module_name: str, root: Path) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (missing == module_name or module_name.startswith(missing + ".")):
            top = module_name.split(".")[0]
            raise AgentLoadError(
                f"no Python module named {module_name!r}: put {top}.py (or a package {top}/) beside this file, "
                "or install it"
            ) from None
        raise AgentLoadError(f"module {module_name!r} failed to import: {_where(exc, root)}") from None
    except Exception as exc:
        raise AgentLoadError(f"module {module_name!r} failed to import: {_where(exc, root)}") from None


def _where(exc: BaseException, root: Path) -> str:
    """``agents.d/planner.py:7: ZeroDivisionError: division by zero``: the deepest frame in the
    configuration (else the deepest frame of all), and the exception."""
    what = f"{type(exc).__name__}: {exc}".rstrip(": ")
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{_shown(Path(exc.filename), root)}:{exc.lineno}: SyntaxError: {exc.msg}"
    frames = traceback.extract_tb(exc.__traceback__)
    resolved = str(Path(root).resolve())
    inside = [f for f in frames if os.path.abspath(f.filename).startswith(resolved + os.sep)]
    if not (inside or frames):
        return what
    frame = (inside or frames)[-1]
    return f"{_shown(Path(frame.filename), root)}:{frame.lineno}: {what}"


def _shown(path: Path, root: Path) -> str:
    try:
        return Path(os.path.abspath(path)).relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(path)
