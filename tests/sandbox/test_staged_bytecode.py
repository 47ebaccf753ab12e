"""The pool's staged scripts: each work root gets its own copy with bytecode the interpreter uses.

- test_each_work_root_gets_bytecode_the_interpreter_loads: two work roots (two state
  directories) staged one after the other in one process; in each, an isolated
  interpreter (``-S -I`` as the pool starts it) imports every script from its staged
  ``.pyc`` (``-v`` says "code object from" that file) and not from a fresh compile,
  and the code names the copy it was loaded from.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from sandbox import _pool, _workdir


def test_each_work_root_gets_bytecode_the_interpreter_loads(tmp_path: Path) -> None:
    for root in (tmp_path / "first", tmp_path / "second"):
        root.mkdir()
        staged = _workdir.staged_copy(str(root), _pool._POOL_FILES, ".pool", bytecode=True)
        for name in _pool._POOL_FILES:
            module = name.removesuffix(".py")
            cached = importlib.util.cache_from_source(os.path.join(staged, name))
            assert os.path.isfile(cached)
            probe = (
                f"import sys; sys.path.insert(0, {staged!r}); import {module} as m; print(m.__file__); "
                "print(next(v for v in vars(m).values() if getattr(v, '__module__', None) == m.__name__ "
                "and hasattr(v, '__code__')).__code__.co_filename)"
            )
            done = subprocess.run(
                [sys.executable, "-S", "-I", "-B", "-v", "-c", probe], capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, done.stderr
            assert done.stdout.split() == [os.path.join(staged, name)] * 2
            assert f"code object from '{cached}'" in done.stderr, done.stderr[-2000:]
