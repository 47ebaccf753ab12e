"""Find a Python tool's module on disk without importing, or running, anything.

``importlib.util.find_spec("pkg.sub")`` imports ``pkg`` (runs its
``__init__.py``) to learn where ``sub`` lives: checking a configuration that
names ``pkg.sub:fn`` would run ``pkg``'s import-time code in the engine, as
root, even when the configuration is then refused.  This module answers the
same question from the filesystem alone, as CPython's path finder would for
source layouts: each search directory is looked at in order for a package
directory with an ``__init__.py``, an extension module or a ``.py`` file;
a directory without ``__init__.py`` is a namespace package portion, used only
when no regular module of that name is found anywhere.  Submodules are looked
for the same way inside the package's directories.  Only directory entries and
file types are read; a module's source is read later by the caller, as text.

The search path of a tool is the directory of the file that declares it (a
``greet.py`` beside ``greet.yaml`` in ``tools.d/``) and then the engine's
``sys.path``; a top-level name found in none of them is asked of the import
system's finders, which look without importing (an editable install maps
names to directories on no ``sys.path`` entry).  Zip archives are not searched.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence

import attrs


@attrs.frozen
class Located:
    """Where a dotted module was found.

    ``top`` is the top-level package directory or module file (what the sandbox
    binds read-only and puts on the tool's ``sys.path``); ``source`` is the
    module's own ``.py`` file, None for a namespace package or a compiled
    module (nothing to read); ``entry`` is the search directory it was found in.
    """

    top: str
    source: str | None
    entry: str


def locate(module: str, search: Sequence[str], *, installed: bool = False) -> Located | None:
    """The location of ``module`` (``a.b.c``) in ``search``, or None when it is not there.

    With ``installed``, a top-level name found in no directory of ``search`` is
    also asked of the import system's finders (:func:`_find_installed`).
    """
    parts = module.split(".")
    locations: Sequence[str] = [entry or os.getcwd() for entry in search]
    found = _find(parts[0], locations) or (_find_installed(parts[0]) if installed else None)
    if found is None:
        return None
    entry, kind, path = found
    top_path = path
    for previous, part in zip(parts, parts[1:], strict=False):
        if kind == "package":
            locations = [path]
        elif kind == "namespace":
            # A namespace package spans every directory of its name in its parent's locations.
            locations = [os.path.join(where, previous) for where in locations
                         if os.path.isdir(os.path.join(where, previous))]
        else:
            return None  # a plain or compiled module has no submodules
        child = _find(part, locations)
        if child is None:
            return None
        _, kind, path = child
    source = None
    if kind == "package" and os.path.isfile(os.path.join(path, "__init__.py")):
        source = os.path.join(path, "__init__.py")
    elif kind == "module":
        source = path
    return Located(top=top_path, source=source, entry=entry)


@functools.lru_cache(maxsize=256)
def locate_on_sys_path(module: str, path: tuple[str, ...]) -> Located | None:
    """``locate`` over the engine's own ``sys.path`` (pass ``tuple(sys.path)``), remembered."""
    return locate(module, path, installed=True)


def default_search() -> tuple[str, ...]:
    """The engine's ``sys.path`` as directories ('' is the current directory)."""
    return tuple(entry or os.getcwd() for entry in sys.path)


def _find_installed(top: str) -> tuple[str, str, str] | None:
    """Where the import system's finders would load the top-level ``top`` from (an editable install's
    finder maps names to directories that are on no ``sys.path`` entry).

    Safe for a top-level name only: ``find_spec`` imports a dotted name's parents,
    but for ``top`` itself the finders only look (nothing runs, nothing is
    imported); an already imported ``top`` answers from ``sys.modules``.
    """
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        where = next(iter(spec.submodule_search_locations))
        kind = "package" if spec.origin and spec.origin.endswith("__init__.py") else "namespace"
        return os.path.dirname(where), kind, where
    if spec.origin and os.path.isfile(spec.origin):
        kind = "module" if spec.origin.endswith(".py") else "compiled"
        return os.path.dirname(spec.origin), kind, spec.origin
    return None  # built in or frozen: nothing on disk to bind


def _find(name: str, search: Sequence[str]) -> tuple[str, str, str] | None:
    """(entry, kind, path) of ``name`` in the first entry holding it; kind is package/module/compiled/namespace."""
    portion: tuple[str, str, str] | None = None
    for entry in search:
        entry = entry or os.getcwd()
        if not os.path.isdir(entry):
            continue  # zip archives and vanished entries are not searched
        candidate = os.path.join(entry, name)
        if os.path.isdir(candidate):
            if os.path.isfile(os.path.join(candidate, "__init__.py")) or any(
                os.path.isfile(os.path.join(candidate, f"__init__{suffix}"))
                for suffix in importlib.machinery.EXTENSION_SUFFIXES
            ):
                return entry, "package", candidate
            if portion is None:
                portion = (entry, "namespace", candidate)
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            if os.path.isfile(candidate + suffix):
                return entry, "compiled", candidate + suffix
        if os.path.isfile(candidate + ".py"):
            return entry, "module", candidate + ".py"
    return portion
