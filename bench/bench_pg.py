"""State store throughput on PostgreSQL against SQLite: the same operations, both backends.

Run by hand: `python bench/bench_pg.py [--turns 300] [--tasks 16] [--url postgresql://...]`.
Without --url a throwaway PostgreSQL cluster is started (tests/pg/cluster.py, fsync ON as
in production; needs the server binaries, as root it runs as nobody) and removed after.
SQLite runs on a fresh file under /tmp (synchronous=NORMAL, as the service uses it).

One "turn" is what a conversation with one approval costs the store: create_session,
4 x append_message, add_pending_action, decide_action, get_session, messages (9 calls).
Prints, per backend and variant, store calls/s and p50/p99 latency of one call:
- sequential: one task, one turn after another;
- concurrent: --tasks tasks at once on one store (one process);
- PostgreSQL, two stores: the same tasks split over two stores on one database (two
  instances' pools; decisions and appends still consistent through row locks).
The audit writer has its own bench: bench/bench_pg_audit.py (and bench/bench_audit.py for
the SQLite writer alone).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid

import trio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.store import Store  # noqa: E402


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def _turn(store: Store, latencies: list[float]) -> None:
    async def timed(call):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        result = await call
        latencies.append(time.perf_counter() - start)
        return result

    sid = uuid.uuid4().hex
    await timed(store.create_session(sid, "alice", "assistant"))
    for i in range(4):
        await timed(store.append_message(sid, {"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"}))
    action = await timed(store.add_pending_action(session_id=sid, subject="alice", kind="tool", name="shell",
                                                  arguments={"cmd": "ls", "token": "t" * 16}, secret=["token"],
                                                  level=1, approver="user", expires_at=time.time() + 60))
    await timed(store.decide_action(action.action_id, "approved", "alice"))
    await timed(store.get_session(sid))
    await timed(store.messages(sid))


async def _run(stores: list[Store], turns: int, tasks: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    per_task = max(1, turns // tasks)

    async def worker(store: Store) -> None:
        for _ in range(per_task):
            await _turn(store, latencies)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(tasks):
            nursery.start_soon(worker, stores[i % len(stores)])
    return time.perf_counter() - start, latencies


def _report(label: str, elapsed: float, latencies: list[float]) -> None:
    print(f"{label:<34} {len(latencies) / elapsed:>9.0f} calls/s   p50 {_percentile(latencies, 0.5) * 1e3:6.2f} ms"
          f"   p99 {_percentile(latencies, 0.99) * 1e3:7.2f} ms   ({len(latencies)} calls)")


async def bench(url: str, turns: int, tasks: int) -> None:
    directory = tempfile.mkdtemp(prefix="bench-pg-", dir="/tmp")
    try:
        async with await Store.open(os.path.join(directory, "state.db")) as store:
            _report("SQLite, sequential", *await _run([store], turns, 1))
            _report(f"SQLite, concurrent ({tasks} tasks)", *await _run([store], turns, tasks))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    async with await Store.connect(url, max_connections=8) as a, await Store.connect(url, max_connections=8) as b:
        _report("PostgreSQL, sequential", *await _run([a], turns, 1))
        _report(f"PostgreSQL, concurrent ({tasks} tasks)", *await _run([a], turns, tasks))
        _report(f"PostgreSQL, two stores ({tasks} tasks)", *await _run([a, b], turns, tasks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--url", help="an existing database (default: a throwaway cluster)")
    args = parser.parse_args()
    if args.url:
        trio.run(bench, args.url, args.turns, args.tasks)
        return
    from tests.pg.cluster import Cluster, find_bin

    bin_dir = find_bin()
    if bin_dir is None:
        sys.exit("no PostgreSQL server binaries: pass --url or apt-get install postgresql")
    cluster = Cluster.start(bin_dir, durable=True)
    try:
        url = cluster.create_database()
        print(f"PostgreSQL: throwaway cluster, fsync on ({bin_dir.parent.name})")
        trio.run(bench, url, args.turns, args.tasks)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
