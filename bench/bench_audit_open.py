"""What the audit writer's start-up check costs: opening a log after a clean stop, and
after a crash that left records after the last checkpoint.

Run by hand: `python bench/bench_audit_open.py [--records 20000] [--unpinned 999] [--dir DIR]`.
Before it continues a log, the writer checks that the key vouches for it (the checkpoint
chain, the pinned record, and every record after the last checkpoint, hash by hash).
After a clean stop that is one record; after a crash, at most the records written since
the last periodic checkpoint (1000 by default). Prints the time `AuditLog.open` takes in
both cases (median of --repeat opens).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import trio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from engine.audit import AuditEvent, AuditLog  # noqa: E402

CRASHING_WRITER = """
import os, sys, trio
from engine.audit import AuditLog, AuditEvent

async def main():
    log = await AuditLog.open(sys.argv[1], checkpoint_every=10**9, checkpoint_interval_s=10**9)
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        for i in range(int(sys.argv[2])):
            await log.record(AuditEvent(kind="execution", subject="alice", outcome="ok", arguments={"i": i}))
        os._exit(0)  # a crash: no shutdown checkpoint

trio.run(main)
"""


async def _fill(state: str, records: int, tasks: int = 50) -> None:
    log = await AuditLog.open(state)
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)

        async def writer(start: int) -> None:
            for i in range(start, records, tasks):
                await log.record(AuditEvent(kind="execution", subject="alice", target="calculator",
                                            arguments={"i": i}, outcome="ok"))

        async with trio.open_nursery() as writers:
            for t in range(tasks):
                writers.start_soon(writer, t)
        await log.aclose()


async def _open_ms(state: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        log = await AuditLog.open(state)
        times.append((time.perf_counter() - began) * 1e3)
        await log.aclose()  # no writer ran: nothing is written
    return statistics.median(times)


async def main(records: int, unpinned: int, repeat: int, base: str | None) -> None:
    root = tempfile.mkdtemp(prefix="sconnect-bench-open-", dir=base)
    try:
        clean = os.path.join(root, "clean")
        await _fill(clean, records)
        took = await _open_ms(clean, repeat)
        print(f"clean stop, {records} records: AuditLog.open {took:.1f} ms (median of {repeat})")
        crashed = os.path.join(root, "crashed")
        await trio.run_process([sys.executable, "-c", CRASHING_WRITER, crashed, str(unpinned)], cwd=ROOT)
        print(f"crash, {unpinned} records after the last checkpoint: AuditLog.open "
              f"{await _open_ms(crashed, repeat):.1f} ms (median of {repeat})")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--unpinned", type=int, default=999)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", help="where to create the state directories (default: the temp dir)")
    options = parser.parse_args()
    trio.run(main, options.records, options.unpinned, options.repeat, options.dir)
