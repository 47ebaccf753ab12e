"""Load one side of ``policy diff``: a directory's policies with its own tools, or the other side's.

Only ``policies/``, ``tools.d/`` and ``resources.d/`` matter to a decision, so
they are gathered (as symlinks) in a temporary directory and loaded from there;
agents are left out, so that an agent's own mistakes do not block a policy diff.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import attrs

from ..config import load_config
from ..config.model import Config
from ..errors import ConfigError, UsageError

_PARTS = ("policies", "tools.d", "resources.d")


def load_policy_set(directory: Path, fallback: Path) -> Config:
    """``directory``'s policies, with its ``tools.d/``/``resources.d/`` or else ``fallback``'s.

    Raises UsageError when ``directory`` has no ``policies/``, and ConfigError
    (files named under ``directory``) when the set does not load.
    """
    if not (directory / "policies").is_dir():
        raise UsageError(f"{directory}: no policies/ directory")
    with tempfile.TemporaryDirectory(prefix="sconnect-policy-") as tmp:
        for part in _PARTS:
            source = directory / part if (directory / part).is_dir() else fallback / part
            if source.is_dir():
                os.symlink(source.resolve(), Path(tmp) / part, target_is_directory=True)
        try:
            config = load_config(tmp)
        except ConfigError as exc:
            raise ConfigError(
                attrs.evolve(p, file=f"{_origin(p.file, directory, fallback)}/{p.file}") for p in exc.problems
            ) from None
    # The root names the directory the policies came from (the revision was hashed while loading them).
    return attrs.evolve(config, root=str(directory.resolve()))


def _origin(file: str, directory: Path, fallback: Path) -> Path:
    part = file.split("/")[0]
    return directory if (directory / part).is_dir() else fallback
