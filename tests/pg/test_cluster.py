"""The test cluster itself: reachable with the password, refusing a wrong one."""

from __future__ import annotations

import psycopg
import pytest


def test_fresh_database_is_reachable_and_empty(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        assert tables == (0,)


def test_wrong_password_is_refused(pg_url: str) -> None:
    bad = pg_url.replace(":test-password-", ":wrong-password-", 1)
    assert bad != pg_url
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(bad, connect_timeout=10).close()
