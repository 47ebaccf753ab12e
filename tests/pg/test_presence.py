"""Presence rows on PostgreSQL (engine/server/pgbus.py), written and read as instances do,
on a real database at fixed times (no server runs, no clock is waited for):

- test_each_row_is_judged_by_its_writers_heartbeat: instances beating at different
  paces (``limits.instance_heartbeat``) judge each other by the writer's own
  ``stale_after``: a slow beater is alive to a fast one between its beats, a fast one
  dead to a slow one once it missed three of its own; the live counts per subject
  follow the same rule, and ``sconnect check``'s listing (``live_instances``) agrees.
- test_a_row_from_an_older_version_stays_fresh_for_the_old_six_seconds: a row without
  ``stale_after`` (an instance of a version that did not write it) counts for 6 s.
- test_the_heartbeat_setting_has_a_floor: ``instance_heartbeat`` under 100 ms (a write
  to the shared database each beat) or not a duration is refused; 250ms is taken.
"""

from __future__ import annotations

import psycopg
import pytest

from engine.errors import UsageError
from engine.server.options import limits_from
from engine.server.pgbus import PRESENCE_STALE_S, Serving, _beat, live_instances
from engine.store import Store

T0 = 1_700_000_000.0


def _serving(instance: str, at: float, heartbeat_s: float) -> Serving:
    return Serving(instance, "sha256:" + "0" * 64, T0, "1.0", "host", seen_at=at, stale_after=3 * heartbeat_s)


async def test_each_row_is_judged_by_its_writers_heartbeat(pg_url: str) -> None:
    async with await Store.connect(pg_url):  # the schema, as an instance's start migrates it
        pass
    with psycopg.connect(pg_url, autocommit=True) as conn:
        _beat(conn, _serving("slow", T0, heartbeat_s=10.0), [("alice", 2, 1)])
        _beat(conn, _serving("fast", T0, heartbeat_s=0.5), [("alice", 1, 1)])
        # 20 s later: the fast one missed 40 beats of its 0.5 s: gone to the slow one...
        counts, live = _beat(conn, _serving("slow", T0 + 20, heartbeat_s=10.0), [("alice", 2, 1)])
        assert (counts, live) == ({}, frozenset())
        # ...which, having just beaten, is alive to the fast one (and so it stays for 30 s).
        counts, live = _beat(conn, _serving("fast", T0 + 20, heartbeat_s=0.5), [])
        assert (counts, live) == ({"alice": (2, 1)}, frozenset({"slow"}))
        counts, live = _beat(conn, _serving("fast", T0 + 45, heartbeat_s=0.5), [])
        assert (counts, live) == ({"alice": (2, 1)}, frozenset({"slow"}))
        assert [s.instance for s in live_instances(conn, T0 + 45.5)] == ["fast", "slow"]
        assert [s.instance for s in live_instances(conn, T0 + 46.6)] == ["slow"]
        assert [s.instance for s in live_instances(conn, T0 + 50.1)] == []
        assert {s.instance: s.stale_after for s in live_instances(conn, T0 + 45)} == {"fast": 1.5, "slow": 30.0}


async def test_a_row_from_an_older_version_stays_fresh_for_the_old_six_seconds(pg_url: str) -> None:
    async with await Store.connect(pg_url):
        pass
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO presence (instance, subject, connections, sessions, seen_at) "
                     "VALUES ('old', '', 0, 0, %s), ('old', 'bob', 1, 1, %s)", (T0, T0))
        counts, live = _beat(conn, _serving("new", T0 + PRESENCE_STALE_S - 0.5, heartbeat_s=0.5), [])
        assert (counts, live) == ({"bob": (1, 1)}, frozenset({"old"}))
        counts, live = _beat(conn, _serving("new", T0 + PRESENCE_STALE_S + 0.5, heartbeat_s=0.5), [])
        assert (counts, live) == ({}, frozenset())
        assert [(s.instance, s.stale_after) for s in live_instances(conn, T0 + 1)] == [("new", 1.5),
                                                                                       ("old", PRESENCE_STALE_S)]


def test_the_heartbeat_setting_has_a_floor() -> None:
    assert limits_from({"instance_heartbeat": "250ms"}, "--limit") == {"instance_heartbeat_s": 0.25}
    with pytest.raises(UsageError, match=r"--limit instance_heartbeat: '10ms' is too small: at least 0.1s"):
        limits_from({"instance_heartbeat": "10ms"}, "--limit")
    with pytest.raises(UsageError, match="--limit instance_heartbeat: .*not a duration"):
        limits_from({"instance_heartbeat": "often"}, "--limit")
