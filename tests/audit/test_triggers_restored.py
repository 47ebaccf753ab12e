"""Append-only triggers dropped behind the writer's back come back at the next open, loudly."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from engine.audit import AuditEvent, AuditLog


async def test_dropped_triggers_are_restored_and_reported(
    tmp_path: Path, nursery, caplog: pytest.LogCaptureFixture  # type: ignore[no-untyped-def]
) -> None:
    async with await AuditLog.open(tmp_path) as log:
        await nursery.start(log.run)
        await log.record(AuditEvent(kind="decision", subject="alice", outcome="allow"))
    raw = sqlite3.connect(tmp_path / "audit.db")
    raw.execute("DROP TRIGGER audit_records_no_update")
    raw.commit()
    raw.close()
    with caplog.at_level(logging.ERROR):
        async with await AuditLog.open(tmp_path):
            pass
    assert "audit_records_no_update was missing" in caplog.text
    raw = sqlite3.connect(tmp_path / "audit.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("UPDATE audit_records SET outcome = 'deny'")
    raw.close()
