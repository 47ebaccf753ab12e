"""A PostgreSQL cluster of a test's own, for tests that stop and restart the server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg.cluster import Cluster, find_bin


@pytest.fixture
def own_cluster(pg_cluster: Cluster) -> Iterator[Cluster]:
    """A second throwaway cluster (the shared one must not go down under other tests)."""
    bin_dir = find_bin()
    if bin_dir is None:
        pytest.skip("stopping a database needs a cluster of our own: install the server (apt-get install postgresql)")
    cluster = Cluster.start(bin_dir)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def shared_env(pg_url: str, tmp_path: Path) -> dict[str, str]:
    """What every instance on one database is given: its URL and the one audit key file
    (the operator copies it to each host; the shared audit chain is signed with it)."""
    key = tmp_path / "shared-keys" / "audit-key"
    key.parent.mkdir(mode=0o700)
    key.write_bytes(os.urandom(32))
    key.chmod(0o400)
    return {"SCONNECT_DATABASE_URL": pg_url, "SCONNECT_AUDIT_KEY_FILE": str(key)}
