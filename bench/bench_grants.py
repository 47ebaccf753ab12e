"""What looking for a grant costs an action that needs an approval (issue 18).

Every action that needs an approval first asks the store for the subject's live grants
on that tool, then checks each against the call. This times that lookup and check on
SQLite (a file in a temporary directory) with 0, 8 and 32 live grants of the subject on
the tool (32 is the most a subject keeps per tool: engine/server/grants.py
MAX_LIVE_PER_TARGET), none of which covers the call (the worst case: every one is
checked), and prints the median and p99 in microseconds.

    python bench/bench_grants.py [--samples 500]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import trio

from engine.grants import exactly, satisfies
from engine.store import GrantRecord, Store


async def bench(samples: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with await Store.open(Path(tmp) / "state.db", digest_key=b"k" * 32) as store:
            made = 0
            now = time.time()
            call = {"path": "wanted.txt", "size": 1}
            for count in (0, 8, 32):
                while made < count:
                    exact = made % 2 == 0
                    await store.add_grant(GrantRecord(
                        grant_id=f"g{made}", subject="alice", session_id=None, scope="duration", kind="tool",
                        name="note", arguments={"path": f"other-{made}.txt"}, arguments_digest="x",
                        constraints=None if exact else ({"argument": "path", "kind": "same",
                                                         "value": f'"other-{made}.txt"'},),
                        level=1, approver="user", rule_id="r", rule_digest="d", action_id="a", made_by="alice",
                        created_at=now, expires_at=now + 3600, status="live"))
                    made += 1
                times = []
                for _ in range(samples):
                    started = time.perf_counter()
                    grants = await store.live_grants("alice", "tool", "note")
                    for grant in grants:
                        if grant.constraints is None:
                            exactly(grant.arguments, grant.arguments_digest, call, frozenset(), store.digest)
                        else:
                            satisfies(grant.constraints, call, store.digest)
                    times.append((time.perf_counter() - started) * 1e6)
                times.sort()
                print(f"{count:5d} live grants: median {statistics.median(times):8.0f} us, "
                      f"p99 {times[int(len(times) * 0.99) - 1]:8.0f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=500)
    trio.run(bench, parser.parse_args().samples)


if __name__ == "__main__":
    main()
