"""Audit writer throughput and per-record latency: sequential vs concurrent writers.

Run by hand: `python bench/bench_audit.py [--records 2000] [--tasks 50] [--dir DIR]`.
Each run writes real records (synchronous=FULL, so every commit is fsync'd) into a fresh
state directory — by default under /tmp; pass --dir to measure the disk the service will
really use. Prints, per variant: records/s, latency p50/p99 of one `record()` call (from
the call to its return, i.e. committed), CPU per record (the whole process: the event
loop, the writer thread, SQLite; then, in brackets, the event loop's share, which includes
making the events, and the rest: the writer thread's, sealing and SQLite), and records
per transaction (group commit: the writer thread commits everything queued when it
wakes in one transaction, so concurrent records share one fsync). Then `verify` over the whole log, timed.

- sequential: one task, one record after another — each waits for its own fsync.
- concurrent: --tasks tasks writing at once — records share transactions.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import trio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.audit import AuditEvent, AuditLog, verify  # noqa: E402


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _event(i: int) -> AuditEvent:
    return AuditEvent(
        kind="execution", subject=f"user{i % 17}", session_id=f"s{i % 5}", agent="assistant",
        action="tool.call", target="read_file", arguments={"path": f"/data/{i}.txt", "token": "x" * 32},
        secret={"token"}, effect="allow", rule_ids=("files-read",), decided_by="rule", outcome="ok",
        duration_ms=12.5, policy_revision="0123abcd", details={"bytes": i * 10},
    )


def _loop_cpu_s() -> float:
    """CPU time of this thread (the event loop's): the rest of the process's is the writer's."""
    return time.thread_time()


async def _run(state: str, records: int, tasks: int) -> tuple[float, float, float, list[float], AuditLog]:
    latencies: list[float] = []
    log = await AuditLog.open(state)
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        per_task = records // tasks

        async def writer(offset: int) -> None:
            for i in range(per_task):
                started = time.perf_counter()
                await log.record(_event(offset + i))
                latencies.append(time.perf_counter() - started)

        began, cpu, loop_cpu = time.perf_counter(), time.process_time(), _loop_cpu_s()
        async with trio.open_nursery() as writers:
            for t in range(tasks):
                writers.start_soon(writer, t * per_task)
        elapsed, cpu, loop_cpu = time.perf_counter() - began, time.process_time() - cpu, _loop_cpu_s() - loop_cpu
        await log.aclose()
    return elapsed, cpu, loop_cpu, latencies, log


async def main(records: int, tasks: int, base: str | None) -> None:
    root = tempfile.mkdtemp(prefix="sconnect-bench-audit-", dir=base)
    try:
        print(f"audit writer, {records} records per variant, in {root}; load average {os.getloadavg()[0]:.2f}")
        print(f"{'variant':<22} {'records/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/rec':>11} {'(loop)':>8} "
              f"{'(writer)':>9} {'per commit':>11}")
        for name, count in (("sequential (1 task)", 1), (f"concurrent ({tasks} tasks)", tasks)):
            state = os.path.join(root, f"state-{count}")
            os.makedirs(state)
            elapsed, cpu, loop_cpu, latencies, log = await _run(state, records, count)
            rate = len(latencies) / elapsed
            print(f"{name:<22} {rate:>10.0f} {_percentile(latencies, 0.5) * 1e3:>8.2f} "
                  f"{_percentile(latencies, 0.99) * 1e3:>8.2f} {cpu / len(latencies) * 1e3:>11.3f} "
                  f"{loop_cpu / len(latencies) * 1e3:>8.3f} {(cpu - loop_cpu) / len(latencies) * 1e3:>9.3f} "
                  f"{log.records_written / log.commits:>11.1f}")
            began = time.perf_counter()
            report = await trio.to_thread.run_sync(verify, state)
            took = time.perf_counter() - began
            assert report.ok, report.problems
            print(f"{'':<22} verify: {report.records} records, {report.checkpoints} checkpoints in "
                  f"{took * 1e3:.0f} ms ({report.records / took:.0f} records/s)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--dir", help="where to create the state directories (default: the temp dir)")
    args = parser.parse_args()
    trio.run(main, args.records, args.tasks, args.dir)
