"""CPU per sandboxed call (launcher and tool, plus the engine's share), per backend.

Run by hand: `python bench/bench_sandbox_cpu.py [--calls 40]`. Wall-clock numbers swing
by 2-3x on a busy machine; CPU time consumed per call does not, so this is the figure to
compare before and after a change to the sandbox's per-call work. "children" is the CPU
of every reaped launcher (process backend: supervisor, namespace init and tool; namespaces
backend: setpriv and bwrap, whose namespace's pid 1 is not reaped by us and so not
counted); "engine" is this process.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile

import trio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sandbox  # noqa: E402


async def main(calls: int) -> None:
    print(sandbox.detect().summary)
    root = tempfile.mkdtemp(prefix="sconnect-bench-cpu-")
    os.chmod(root, 0o755)
    for isolation in ("process", "namespaces"):
        spec = sandbox.Spec(
            argv=("/bin/true",), isolation=isolation, work_root=f"{root}/work"  # type: ignore[arg-type]
        )
        try:
            backend = sandbox.backend_for(spec)
        except sandbox.IsolationUnavailable as exc:
            print(f"{isolation:10}  unavailable: {exc}")
            continue
        await backend.run(spec, {})  # warm caches (runner copy, seccomp program)
        kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self0 = resource.getrusage(resource.RUSAGE_SELF)
        for _ in range(calls):
            result = await backend.run(spec, {})
            assert result.status == "ok", result
        kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        kids = (kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime) / calls
        engine = (self1.ru_utime + self1.ru_stime - self0.ru_utime - self0.ru_stime) / calls
        print(
            f"{isolation:10}  /bin/true  children CPU {kids * 1000:5.1f} ms/call  "
            f"engine CPU {engine * 1000:4.1f} ms/call"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=40)
    trio.run(main, parser.parse_args().calls)
