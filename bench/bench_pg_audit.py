"""Audit records/s: the shared chain on PostgreSQL (one writer, several writers) against SQLite.

Run by hand: `python bench/bench_pg_audit.py [--records 2000] [--tasks 16] [--writers 3]
[--url postgresql://...]`. Without --url a throwaway PostgreSQL cluster is started
(tests/pg/cluster.py, fsync ON as in production) and removed after. SQLite runs on a fresh
state directory under /tmp (synchronous=FULL, as the audit log uses it).

Each variant appends --records records (the realistic event of tests/audit/conftest.py)
and prints records/s, how many commits (groups) it took, and p50/p99 of one
``record()`` call (queued to committed):
- sequential: one task awaiting each record before the next (a lone record: one commit);
- concurrent: --tasks tasks on one writer (group commit);
- PostgreSQL, N writers: --writers audit logs on one database (as N instances: each its
  own state directory, pool and writer task; all in this process), --tasks tasks spread
  over them. Every commit takes the shared head row's lock, so the writers take turns.
At the end the PostgreSQL chain is verified (``verify_shared``), to show it stayed one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.audit import AuditLog, PgAuditLog, verify_shared  # noqa: E402
from tests.audit.conftest import event  # noqa: E402


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def _run(logs: list[AuditLog], records: int, tasks: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    per_task = max(1, records // tasks)

    async def worker(log: AuditLog, base: int) -> None:
        for i in range(base, base + per_task):
            start = time.perf_counter()
            await log.record(event(i))
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for t in range(tasks):
            nursery.start_soon(worker, logs[t % len(logs)], t * per_task)
    return time.perf_counter() - start, latencies


def _report(label: str, logs: list[AuditLog], commits_before: int, elapsed: float, latencies: list[float]) -> None:
    commits = sum(log.commits for log in logs) - commits_before
    print(f"{label:<44} {len(latencies) / elapsed:>8.0f} records/s  {commits:>6} commits   "
          f"p50 {_percentile(latencies, 0.5) * 1e3:6.2f} ms   p99 {_percentile(latencies, 0.99) * 1e3:7.2f} ms")


async def _variant(label: str, logs: list[AuditLog], records: int, tasks: int) -> None:
    before = sum(log.commits for log in logs)
    _report(label, logs, before, *await _run(logs, records, tasks))


async def bench(url: str, records: int, tasks: int, writers: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="bench-pg-audit-", dir="/tmp"))
    try:
        key = base / "keys" / "audit-key"
        key.parent.mkdir(mode=0o700)
        key.write_bytes(os.urandom(32))
        key.chmod(0o400)
        async with trio.open_nursery() as nursery:
            sqlite = await AuditLog.open(base / "sqlite", key_file=key)
            await nursery.start(sqlite.run)
            await _variant("SQLite, sequential", [sqlite], records // 4, 1)
            await _variant(f"SQLite, concurrent ({tasks} tasks)", [sqlite], records, tasks)
            await sqlite.aclose()

            logs: list[AuditLog] = []
            for n in range(writers):
                log = await PgAuditLog.connect(base / f"pg{n}", url, key_file=key)
                await nursery.start(log.run)
                logs.append(log)
            await _variant("PostgreSQL, sequential", logs[:1], records // 4, 1)
            await _variant(f"PostgreSQL, concurrent ({tasks} tasks)", logs[:1], records, tasks)
            await _variant(f"PostgreSQL, {writers} writers ({tasks} tasks)", logs, records, tasks)
            await _variant(f"PostgreSQL, {writers} writers (sequential each)", logs, records // 4, writers)
            for log in logs:
                await log.aclose()
        report = await trio.to_thread.run_sync(lambda: verify_shared(url, key_file=key))
        print(f"shared chain: {report.records} records, {report.checkpoints} checkpoints, "
              f"verify {'OK' if report.ok else 'FAILED: ' + str(report.first_problem)}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--writers", type=int, default=3)
    parser.add_argument("--url", help="an existing, empty database (default: a throwaway cluster)")
    args = parser.parse_args()
    if args.url:
        trio.run(bench, args.url, args.records, args.tasks, args.writers)
        return
    from tests.pg.cluster import Cluster, find_bin

    bin_dir = find_bin()
    if bin_dir is None:
        sys.exit("no PostgreSQL server binaries: pass --url or apt-get install postgresql")
    cluster = Cluster.start(bin_dir, durable=True)
    try:
        url = cluster.create_database()
        print(f"PostgreSQL: throwaway cluster, fsync on ({bin_dir.parent.name})")
        trio.run(bench, url, args.records, args.tasks, args.writers)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
