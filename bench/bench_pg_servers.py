"""Real servers on a shared PostgreSQL against one server on SQLite: frames/s, p50/p99.

Run by hand: `python bench/bench_pg_servers.py [--clients 20] [--rounds 25]`.
Starts a throwaway PostgreSQL cluster (tests/pg/cluster.py, fsync on; needs the server
binaries, as root it runs as nobody), then, in turn:
- one `sconnect serve` on SQLite (its own state directory);
- two `sconnect serve` on one PostgreSQL database (state, approvals and the audit chain
  shared; one audit key), the clients spread over both.
Each of --clients WebSocket clients (its own subject) runs --rounds rounds of four
session frames that each write the state store: start a session, pause, resume, stop.
Prints frames/s over all clients and p50/p99 of one frame's round trip. No tool runs:
the sandbox is not what is measured here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jwt
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.client import open_client  # noqa: E402

SECRET = "bench-secret-0123456789abcdef0123456789abcdef"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _start(base: Path, name: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    config = base / "config"
    if not config.exists():
        for kind in ("agents.d", "tools.d", "resources.d", "policies"):
            shutil.copytree(ROOT / kind, config / kind)
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "serve", "--port", "0", "--config", str(config),
         "--state-dir", str(base / name), "--shutdown-grace", "1s"],
        cwd=ROOT, env={**os.environ, "SCONNECT_JWT_SECRET": SECRET, "PYTHONPATH": str(ROOT), **env},
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    if not url.startswith("ws"):
        process.kill()
        raise SystemExit(f"the server {name} did not start")
    return process, url


async def _clients(urls: list[str], clients: int, rounds: int) -> tuple[float, list[float]]:
    latencies: list[float] = []

    async def client(i: int) -> None:
        token = jwt.encode({"sub": f"user{i}", "roles": ["user"], "exp": int(time.time()) + 3600}, SECRET,
                           algorithm="HS256")
        async with open_client(urls[i % len(urls)], token) as conn:
            for _ in range(rounds):
                start = time.perf_counter()
                sid = (await conn.start_session("assistant")).session_id
                latencies.append(time.perf_counter() - start)
                for command in ("pause", "resume", "stop"):
                    start = time.perf_counter()
                    await conn.control(sid, command)
                    latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(clients):
            nursery.start_soon(client, i)
    return time.perf_counter() - start, latencies


def _report(label: str, elapsed: float, latencies: list[float]) -> None:
    print(f"{label:<40} {len(latencies) / elapsed:>7.0f} frames/s   p50 {_percentile(latencies, 0.5) * 1e3:6.2f} ms"
          f"   p99 {_percentile(latencies, 0.99) * 1e3:7.2f} ms   ({len(latencies)} frames)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args()
    from tests.pg.cluster import Cluster, find_bin

    bin_dir = find_bin()
    if bin_dir is None:
        sys.exit("no PostgreSQL server binaries: apt-get install postgresql")
    base = Path(tempfile.mkdtemp(prefix="bench-pg-servers-", dir="/tmp"))
    os.chmod(base, 0o711)
    cluster = Cluster.start(bin_dir, durable=True)
    processes: list[subprocess.Popen[str]] = []
    try:
        lite, lite_url = _start(base, "sqlite", {})
        processes.append(lite)
        _report("one server, SQLite", *trio.run(_clients, [lite_url], args.clients, args.rounds))
        lite.terminate()
        lite.wait(timeout=30)
        database = cluster.create_database()
        # Every instance on one database signs the shared audit chain with the same key.
        key = base / "keys" / "audit-key"
        key.parent.mkdir(mode=0o700)
        key.write_bytes(os.urandom(32))
        key.chmod(0o400)
        urls = []
        for name in ("pg-a", "pg-b"):
            process, url = _start(base, name, {"SCONNECT_DATABASE_URL": database, "SCONNECT_AUDIT_KEY_FILE": str(key)})
            processes.append(process)
            urls.append(url)
        _report("two servers, one PostgreSQL", *trio.run(_clients, urls, args.clients, args.rounds))
        _report("one of them alone, PostgreSQL", *trio.run(_clients, urls[:1], args.clients, args.rounds))
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
