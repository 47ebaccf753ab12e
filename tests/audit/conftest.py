"""Helpers for the audit tests: a real writer over a real state directory, and an
attacker's raw connection."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio

from engine.audit import AuditEvent, AuditLog, AuditRecord

#: A digest key for events prepared by hand (an attacker's forged rows, bad inputs).
ANY_KEY = b"k" * 32
TRIGGERS = ("audit_records_no_update", "audit_records_no_delete",
            "audit_checkpoints_no_update", "audit_checkpoints_no_delete")


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir(mode=0o711)
    return path


def event(i: int, **overrides: Any) -> AuditEvent:
    """A varied, realistic event: i picks subject, tool and outcome."""
    fields: dict[str, Any] = dict(
        kind="execution", subject=("alice", "bob", "carol")[i % 3], session_id=f"s{i % 4}",
        agent="assistant", action="tool.call", target=("shell", "read_file", "send_payment")[i % 3],
        arguments={"n": i, "path": f"/tmp/f{i}", "token": f"secret-{i}"}, secret={"token"},
        effect="allow", rule_ids=("r-base",), decided_by="rule",
        outcome=("ok", "error", "denied")[i % 3], duration_ms=i * 1.5, policy_revision="rev-1",
        details={"i": i},
    )
    fields.update(overrides)
    return AuditEvent(**fields)


async def write_records(log: AuditLog, count: int, start: int = 0) -> list[AuditRecord]:
    return [await log.record(event(i)) for i in range(start, start + count)]


async def write_log(state: Path, nursery: trio.Nursery, count: int, **options: Any) -> list[AuditRecord]:
    """Run a writer, append ``count`` records, stop it cleanly (shutdown checkpoint)."""
    log = await AuditLog.open(state, **options)
    await nursery.start(log.run)
    records = await write_records(log, count)
    await log.aclose()
    return records


def attacker(state: Path) -> sqlite3.Connection:
    """A raw connection by someone with write access to the file: triggers dropped."""
    conn = sqlite3.connect(state / "audit.db", isolation_level=None)
    for name in TRIGGERS:
        conn.execute(f"DROP TRIGGER IF EXISTS {name}")
    return conn
