"""Where the configuration is: ``--config DIR``, else the current directory, else the example.

The example configuration ships with the package: in a source checkout or an
editable install it is the repository's own ``agents.d/`` ... ``policies/``;
a regular install carries a copy under ``<prefix>/share/scalytics-connect/example``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import ConfigError, ConfigProblem
from .loader import KIND_DIRS


def is_config_dir(path: Path) -> bool:
    """Whether ``path`` holds any of the kinds' directories (``models.d/`` included: see KIND_DIRS)."""
    return any((path / name).is_dir() for name in KIND_DIRS.values())


def example_config_dir() -> Path:
    """The shipped example configuration, wherever this installation keeps it."""
    candidates = [
        Path(__file__).resolve().parents[2],
        Path(sys.prefix) / "share" / "scalytics-connect" / "example",
    ]
    for candidate in candidates:
        if (candidate / "tools.d").is_dir() and (candidate / "agents.d").is_dir():
            return candidate
    raise ConfigError(
        [ConfigProblem("<example>", 0, 0, "", "the shipped example configuration is missing from this installation")]
    )


def resolve_config_dir(explicit: str | Path | None, cwd: Path | None = None) -> Path:
    """The directory to load: the one asked for, the current one if it is one, else the example."""
    if explicit is not None:
        return Path(explicit)
    here = cwd or Path.cwd()
    return here if is_config_dir(here) else example_config_dir()
