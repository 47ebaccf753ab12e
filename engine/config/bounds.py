"""The limits every configuration load stays within, whatever the files hold.

A hot reload reads files that anyone who can write into the configuration
directory controls, in the service's own process.  These bounds keep one such
file from stalling the reload, crashing the process or inflating every
``tool_list``: each is far above what a hand-written configuration needs
(the shipped files are a few KiB, ten nodes deep at most) and is checked
before the work it bounds is done.  The README's configuration reference lists
them.  Files are read only where the operator put them: see :func:`within`.
"""

from __future__ import annotations

from pathlib import Path

# A file's size, checked on the open descriptor before anything is read.
MAX_FILE_BYTES = 256 * 1024
# Values (scalars, lists, mappings) in one file, counted while parsing, before composing.
MAX_NODES = 20_000
# Lists and mappings inside each other; libyaml's composer recurses in C, and
# ~100,000 levels crash the whole process (measured: SIGSEGV), so this is checked first.
MAX_DEPTH = 64
# Configuration files in one directory (agents.d/, tools.d/, resources.d/, policies/).
MAX_FILES_PER_DIR = 1_000
# A tool's `parameters` JSON Schema, as compact JSON: it is sent in every tool_list.
MAX_PARAMETERS_BYTES = 32 * 1024
# A Python tool's module source beside it in tools.d/, read (never run) to check that its
# function exists; an installed module past it is trusted unread, like a compiled one.
MAX_MODULE_BYTES = 1024 * 1024


def format_bytes(count: int) -> str:
    """``262144`` -> ``256 KiB``; ``8.0 MiB`` style with one decimal when not whole."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            value = count / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{count} bytes"


def within(path: Path, *boundaries: Path) -> bool:
    """Whether ``path``, every link followed, lies inside one of ``boundaries`` (each resolved too).

    The boundaries are taken as the operator laid them out: the configuration
    directory and each of ``agents.d/`` ... ``policies/`` may themselves be links
    (``policy diff`` assembles one from links; a Kubernetes ConfigMap is links
    into ``..data/``).  What anyone who can only drop files into ``tools.d/``
    controls, a file's own link, may not lead anywhere else (``/etc/shadow``).
    """
    try:
        real = path.resolve(strict=True)
        return any(real.is_relative_to(boundary.resolve(strict=True)) for boundary in boundaries)
    except (OSError, RuntimeError):  # vanished, or a link loop
        return False
