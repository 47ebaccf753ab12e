"""The instances serving on one shared database, and whether they serve the same policy
revision as a configuration (for ``sconnect check``).

Each instance publishes what it serves with its heartbeat (engine/server/pgbus.py); this
reads the fresh rows once and compares them. An instance whose row has no revision runs a
version that does not publish it: it is listed as such, never counted as equal.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ..server.pgbus import PRESENCE_STALE_S, Serving, live_instances


def instances_on(url: str) -> list[Serving]:
    """The live instances on the database at ``url``; :class:`engine.pg.PgError` (one line:
    why) when it cannot be reached."""
    import psycopg

    from ..pg import PgUnavailableError, connect_once, describe

    with connect_once(url, "sconnect-check") as conn:
        try:
            return live_instances(conn, time.time())
        except psycopg.errors.UndefinedTable:
            return []  # no instance ever served on this database (its schema is not there yet)
        except psycopg.errors.UndefinedColumn:
            # The schema predates published revisions: the instances run an older version.
            rows = conn.execute("SELECT instance, seen_at FROM presence WHERE subject = '' AND seen_at > %s "
                                "ORDER BY instance", (time.time() - PRESENCE_STALE_S,)).fetchall()
            return [Serving(str(i), None, None, None, None, float(seen)) for i, seen in rows]
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PgUnavailableError(f"cannot list the instances on {describe(url)}: {reason}") from None


def compare(revision: str, instances: Sequence[Serving]) -> list[str]:
    """One line per way the fleet differs from ``revision`` (the configuration checked) or
    within itself; empty when every live instance serves ``revision``."""
    if not instances:
        return []
    served = {serving.revision for serving in instances}
    lines = []
    if len(served) > 1:
        lines.append(f"the {len(instances)} live instances serve {len(served)} different policy revisions: "
                     + "; ".join(f"{_short(r)} on {', '.join(_names(instances, r))}" for r in _ordered(served)))
    others = [serving for serving in instances if serving.revision != revision]
    if others:
        lines.append(f"{len(others)} of {len(instances)} live instances do not serve this configuration's "
                     f"revision {_short(revision)}: {', '.join(_name(s) for s in others)}")
    return lines


def render_instances(revision: str, instances: Sequence[dict[str, Any]]) -> list[str]:
    """The summary's lines about the live instances (``instances``: :class:`Serving` as dicts)."""
    if not instances:
        return ["live instances on the database: none (no instance has renewed its heartbeat lately)"]
    lines = [f"live instances on the database ({len(instances)}), this configuration is {_short(revision)}:"]
    for serving in instances:
        same = "same" if serving["revision"] == revision else "DIFFERENT"
        loaded = (datetime.fromtimestamp(serving["loaded_at"], UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
                  if serving["loaded_at"] is not None else "?")
        lines.append(f"  {serving['instance']:<14} {_short(serving['revision'])} ({same}), loaded {loaded}, "
                     f"version {serving['version'] or '?'}, host {serving['host'] or '?'}")
    return lines


def _short(revision: str | None) -> str:
    # The full hash is in --json; 12 hex digits name a revision unambiguously in practice.
    return "(not published)" if revision is None else revision[: len("sha256:") + 12]


def _ordered(revisions: set[str | None]) -> list[str | None]:
    return sorted(revisions, key=lambda r: (r is None, r or ""))


def _name(serving: Serving) -> str:
    return f"{serving.instance} ({serving.host})" if serving.host else serving.instance


def _names(instances: Sequence[Serving], revision: str | None) -> list[str]:
    return [_name(s) for s in instances if s.revision == revision]
