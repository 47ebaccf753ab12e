"""Configuration loading: the shipped config, and how fast hostile files are refused.

Run by hand: `python bench/bench_config.py [--runs 50]`.  Prints the time of the
process's first `load_config` of the shipped example configuration (what
`sconnect check` and a server's start do: nothing remembered yet), then the median
and best time and the CPU of loading it again (every hot reload, every server
started in one process: parses, schema verdicts and tool modules are remembered by
content), then, per hostile file dropped into a
copy of it (billion laughs, an 8 MiB file, deep nesting), the time to refuse
the load and the number of problems reported.  The whole-process time of
`sconnect check` is best taken from outside, e.g. `/usr/bin/time -v sconnect check`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.config import KIND_DIRS, load_config  # noqa: E402
from engine.errors import ConfigError  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _billion_laughs() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 9):
        prev, name = chr(ord("a") + level - 1), chr(ord("a") + level)
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    return "\n".join(lines) + "\n"


HOSTILE: dict[str, Callable[[], str]] = {
    "billion laughs": _billion_laughs,
    "8 MiB file": lambda: "name: big\ndescription: " + "x" * (8 * 2**20) + "\n",
    "nesting 100000 deep": lambda: "a: " + "[" * 100_000 + "]" * 100_000 + "\n",
}


def _timed(runs: int, call: Callable[[], object]) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def _refused(root: Path) -> int:
    try:
        load_config(root)
    except ConfigError as exc:
        return len(exc.problems)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    first = _timed(1, lambda: load_config(REPO))[0]
    print(f"shipped config: first load_config of the process {first * 1000:.1f} ms")
    cpu = time.process_time()
    times = _timed(args.runs, lambda: load_config(REPO))
    cpu = (time.process_time() - cpu) / args.runs
    print(f"shipped config, loaded again: load_config median {statistics.median(times) * 1000:.1f} ms, "
          f"best {min(times) * 1000:.1f} ms, {cpu * 1000:.1f} ms CPU each ({args.runs} runs)")
    for label, make in HOSTILE.items():
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for name in KIND_DIRS.values():
                shutil.copytree(REPO / name, root / name)
            (root / "tools.d" / "hostile.yaml").write_text(make())
            runs = max(1, args.runs // 10)
            count = _refused(root)
            times = _timed(runs, lambda root=root: _refused(root))  # type: ignore[misc]
            print(f"{label}: refused with {count} problem(s), median {statistics.median(times) * 1000:.1f} ms "
                  f"({runs} runs)")


if __name__ == "__main__":
    main()
