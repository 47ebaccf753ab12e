"""The engine's exception tree.

Every error the engine raises on purpose derives from one root, so that a
boundary (the CLI, a connection handler) can tell "our typed failure, with a
message meant for a person" from a bug::

    ScalyticsError
    ├── ConfigError          the configuration did not load; holds every problem
    └── UsageError           a command line or argument that cannot be acted on

Modules that own a boundary (protocol, auth, store, sandbox) define their own
subclasses next to the code that raises them.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs


class ScalyticsError(Exception):
    """Root of every error the engine raises deliberately."""


@attrs.frozen(order=True)
class ConfigProblem:
    """One thing wrong with the configuration, located as precisely as we can.

    ``line`` and ``column`` are 1-based; 0 means "the whole file" (e.g. a file
    that cannot be read).  ``field`` is the dotted path inside the document,
    empty when the problem is about the document as a whole.
    """

    file: str
    line: int
    column: int
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line == 0 else f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class ConfigError(ScalyticsError):
    """The configuration is invalid; ``problems`` lists all of it, sorted by place."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems = tuple(sorted(problems))
        count = len(self.problems)
        head = f"{count} configuration error{'s' if count != 1 else ''}"
        super().__init__("\n".join([head, *map(str, self.problems)]))


class UsageError(ScalyticsError):
    """A command-line request that cannot be carried out as asked."""
