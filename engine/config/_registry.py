"""`Registry`: named extensions of one sort (tool kinds, model providers, resource kinds).

The built-in ones register themselves when the package holding them is imported; the
registry imports that package on its first question (discovery), so a module that only
reads the registry never has to import the implementations itself. The import runs
once: another thread asking meanwhile waits for it, and the ``register`` calls the
import itself makes come back at once. ``generation`` changes whenever an entry comes
or goes, so what is built from the entries (a schema, its validator) can be cached
under it. This module imports nothing of the engine.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping
from typing import Generic, Protocol, TypeVar


class _Named(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=_Named)


class Registry(Generic[T]):
    """One sort of extension, by name; see the module docstring."""

    def __init__(self, what: str, package: str) -> None:
        self._what = what  # "tool kind": how errors name an entry
        self._package = package  # imported on the first question; its modules register
        self._entries: dict[str, T] = {}
        self._lock = threading.Lock()
        self._discovery = threading.RLock()
        self._discovered = False
        self._discovering = False
        self._generation = 0

    def register(self, entry: T) -> T:
        """Add ``entry``; another entry under a taken name is a programming error.

        Each question to the registry sees the entries registered so far: register
        before loading a configuration that uses the entry.
        """
        self.entries()  # the built-in entries first, whoever registers first
        with self._lock:
            known = self._entries.get(entry.name)
            if known is not None and known != entry:
                raise ValueError(f"{self._what} {entry.name!r} is already registered")
            if known is None:
                self._entries[entry.name] = entry
                self._generation += 1
        return entry

    def unregister(self, name: str) -> None:
        """Remove an entry registered from outside the engine (a test's); unknown names are ignored."""
        with self._lock:
            if self._entries.pop(name, None) is not None:
                self._generation += 1

    def generation(self) -> int:
        return self._generation

    def entries(self) -> Mapping[str, T]:
        """Every registered entry by name, the built-in ones included (in registration order)."""
        if not self._discovered:
            with self._discovery:
                if not self._discovered and not self._discovering:
                    self._discovering = True
                    try:
                        importlib.import_module(self._package)
                    finally:
                        self._discovering = False
                    self._discovered = True
        return dict(self._entries)
